// client.js: the ClientDataPreview's live view: the session's client view (what a client of
// the flow would see) as one tree, the keys that changed in the last update marked.
//
// Model traits: `data` ({scope: {key: value, resources: {name: data}}}, see model/display.py
// client_view), `changed_at`, `live`, `title`, `subtitle`.
import { Tree } from "./jsontree.js";
import { el, follow, header, watchKernel } from "./view.js";

function render({ model, el: host }) {
  const root = el("div", "fs-card fs-view fs-client-data");
  const head = header(model.get("title") || "client data");
  const tree = new Tree({ expandDepth: 3, empty: "(no client data declared)" });
  const note = el("div", "fs-sub fs-note");
  root.append(head.element, tree.element, note);
  host.append(root);
  watchKernel(model, host, root, head);
  let last = null;

  const draw = () => {
    head.setTitle(model.get("title") || "client data");
    head.setSubtitle(model.get("subtitle") || "");
    if (!root.classList.contains("fs-dead")) head.setLive(model.get("live"));
    head.setChanged(model.get("changed_at"));
    const data = model.get("data") || {};
    const text = JSON.stringify(data);
    if (text === last) return;
    last = text;
    const changed = tree.set(data);
    note.textContent = changed.size ? `${changed.size} changed in the last update` : "";
  };

  return follow(model, ["data", "changed_at", "live", "title", "subtitle"], draw);
}

export default { render };
