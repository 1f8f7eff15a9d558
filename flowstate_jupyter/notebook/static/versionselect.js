// versionselect.js: History's 'from' and 'to' lists (_version_select.py). Drawn like
// ipywidgets' Dropdown (same classes, so the same look), but a choice is sent as the version
// itself, {choose: 3}, never as a position in a list the kernel may have changed since.
//
// Model traits: `options` ([[label, version], ...]), `value` (a version or null),
// `description`, `width`, `description_width`.
import { el, follow } from "./view.js";

let count = 0;

function render({ model, el: host }) {
  const box = el("div", "jupyter-widgets widget-inline-hbox widget-dropdown fs-version-select");
  const label = el("label", "widget-label");
  const select = el("select");
  select.id = label.htmlFor = `fs-version-select-${++count}-${Math.random().toString(36).slice(2)}`;
  box.append(label, select);
  host.append(box);

  let drawn = "";
  const draw = () => {
    const description = model.get("description") || "";
    label.textContent = description;
    label.title = description;
    label.hidden = !description;
    label.style.width = model.get("description_width") || "";
    box.style.width = model.get("width") || "";
    const options = model.get("options") || [];
    const key = JSON.stringify(options);
    if (key !== drawn) {  // rebuilt only when the list changed
      drawn = key;
      select.textContent = "";
      for (const [text, version] of options) {
        const option = el("option", "", String(text).replace(/ /g, "\u00a0"));
        option.value = String(version);
        select.append(option);
      }
    }
    const value = model.get("value");
    select.value = value === null || value === undefined ? "" : String(value);
    if (value === null || value === undefined) select.selectedIndex = -1;
  };

  select.addEventListener("change", () => {
    model.send({ choose: select.value === "" ? null : Number(select.value) });
  });
  return follow(model, ["options", "value", "description", "width", "description_width"], draw);
}

export default { render };
