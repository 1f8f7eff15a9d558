// json.js: any JSON value as a tree with change marks (JsonView). FlowRunner shows a run's
// output with it.
//
// Model traits: `value`, `title` (empty: no header), `subtitle`, `expand_depth`.
import { Tree } from "./jsontree.js";
import { el, follow } from "./view.js";

function render({ model, el: host }) {
  const root = el("div", "fs-card fs-json-view");
  const head = el("div", "fs-head");
  const title = el("span", "fs-title");
  const sub = el("span", "fs-sub");
  head.append(title, sub);
  const tree = new Tree({ expandDepth: model.get("expand_depth") ?? 2 });
  const scalar = el("pre", "fs-json");
  root.append(head, tree.element, scalar);
  host.append(root);

  const draw = () => {
    title.textContent = model.get("title") || "";
    sub.textContent = model.get("subtitle") || "";
    head.hidden = !model.get("title");
    const value = model.get("value");
    const container = value !== null && typeof value === "object";
    tree.element.hidden = !container;
    scalar.hidden = container;
    if (container) tree.set(value);
    else scalar.textContent = typeof value === "string" ? value : JSON.stringify(value);
  };

  return follow(model, ["value", "title", "subtitle"], draw);
}

export default { render };
