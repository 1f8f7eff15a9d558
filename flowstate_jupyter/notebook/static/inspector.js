// inspector.js: the Inspector's live view. One tab per scope (state and resources as trees)
// plus Windmill states; a tab whose content changed in the last update carries a dot.
//
// Model traits (set by notebook/widgets.py): `scopes` (a list of scope views, see
// model/display.py scope_view), `windmill` (a list of {path, version, value, updated_at}, or
// null for no tab), `changed_at` (Unix seconds), `live` (bool), `title`.
import { Tree } from "./jsontree.js";
import { el, follow, header, watchKernel, when } from "./view.js";

function render({ model, el: host }) {
  const root = el("div", "fs-card fs-view fs-inspector");
  const head = header(model.get("title") || "Inspector");
  const tabs = el("div", "fs-tabs");
  tabs.setAttribute("role", "tablist");
  const panes = el("div", "fs-panes");
  root.append(head.element, tabs, panes);
  host.append(root);
  watchKernel(model, host, root, head);

  const trees = new Map(); // "session/state", "session/res/plan", "windmill/<path>" -> Tree
  const tabEls = new Map();
  const paneEls = new Map();
  let active = null;

  const tree = (key, depth = 1) => {
    if (!trees.has(key)) trees.set(key, new Tree({ expandDepth: depth }));
    return trees.get(key);
  };

  const select = (name) => {
    active = name;
    for (const [n, tab] of tabEls) {
      const on = n === name;
      tab.classList.toggle("fs-active", on);
      tab.setAttribute("aria-selected", String(on));
      paneEls.get(n).hidden = !on;
    }
  };

  const tab = (name) => {
    if (!tabEls.has(name)) {
      const button = el("button", "fs-tab", name);
      button.type = "button";
      button.setAttribute("role", "tab");
      button.dataset.tab = name;
      button.addEventListener("click", () => select(name));
      const pane = el("div", "fs-pane");
      pane.setAttribute("role", "tabpanel");
      pane.dataset.pane = name;
      tabs.append(button);
      panes.append(pane);
      tabEls.set(name, button);
      paneEls.set(name, pane);
    }
    return [tabEls.get(name), paneEls.get(name)];
  };

  const drawn = new Map(); // tab name -> the JSON it shows (unchanged tabs are left alone)
  const fresh = (name, data) => {
    const text = JSON.stringify(data);
    if (drawn.get(name) === text) return false;
    drawn.set(name, text);
    return true;
  };

  const drawScope = (view) => {
    if (!fresh(view.scope, view)) return;
    const [button, pane] = tab(view.scope);
    let changed = 0;
    pane.textContent = "";
    pane.append(el("div", "fs-sub fs-scope-line",
      `'${view.id}' \u00b7 v${view.version} \u00b7 updated ${when(view.updated_at)}`));
    const state = tree(`${view.scope}/state`);
    changed += state.set(view.state || {}).size;
    state.emptyText = "(no state fields)";
    const stateBox = el("div", "fs-state");
    stateBox.append(state.element);
    pane.append(stateBox);
    if (view.resources && view.resources.length) {
      pane.append(el("div", "fs-section", "resources"));
      for (const res of view.resources) {
        const box = el("div", "fs-resource");
        box.dataset.resource = res.name;
        const line = el("div", "fs-resource-head");
        line.append(el("span", "fs-key", res.name));
        if (res.kind === "collection") {
          line.append(el("span", "fs-sub", ` \u00b7 collection of ${res.count}`));
          box.append(line);
          const keys = tree(`${view.scope}/res/${res.name}`, 0);
          changed += keys.set(res.keys).size;
          box.append(keys.element);
        } else {
          line.append(el("span", "fs-sub",
            ` \u00b7 v${res.version}${res.writable ? "" : " \u00b7 read-only"}`));
          box.append(line);
          const t = tree(`${view.scope}/res/${res.name}`);
          changed += t.set(res.state || {}).size;
          box.append(t.element);
          if (res.content !== null && res.content !== undefined) {
            const more = res.content_chars > res.content.length
              ? ` (${res.content_chars.toLocaleString()} characters)` : "";
            box.append(el("div", "fs-sub", `content${more}`));
            box.append(el("pre", "fs-pre fs-content-preview", res.content));
          }
        }
        pane.append(box);
      }
    }
    button.classList.toggle("fs-tab-changed", changed > 0);
  };

  const drawWindmill = (states) => {
    if (!fresh("windmill", states)) return;
    const [button, pane] = tab("windmill");
    pane.textContent = "";
    if (!states.length) {
      pane.append(el("div", "fs-muted",
        "(none yet: get_state() / set_state() from flowstate_jupyter.windmill)"));
      return;
    }
    let changed = 0;
    for (const s of states) {
      const box = el("div", "fs-resource");
      const line = el("div", "fs-resource-head");
      line.append(el("span", "fs-key", s.path),
        el("span", "fs-sub", ` \u00b7 v${s.version} \u00b7 updated ${when(s.updated_at)}`));
      const t = tree(`windmill/${s.path}`, 1);
      t.rootLabel = null;
      changed += t.set(s.value).size;
      box.append(line, t.element);
      pane.append(box);
    }
    button.classList.toggle("fs-tab-changed", changed > 0);
  };

  const draw = () => {
    head.setTitle(model.get("title") || "Inspector");
    if (!root.classList.contains("fs-dead")) head.setLive(model.get("live"));
    head.setChanged(model.get("changed_at"));
    for (const view of model.get("scopes") || []) drawScope(view);
    const wm = model.get("windmill");
    if (wm !== null && wm !== undefined) drawWindmill(wm);
    if (active === null || !tabEls.has(active)) select(tabEls.keys().next().value);
    else select(active);
  };

  return follow(model, ["scopes", "windmill", "changed_at", "live", "title"], draw);
}

export default { render };
