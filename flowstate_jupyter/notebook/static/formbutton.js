// formbutton.js: a form's Run or Resume button (_form.py, FormButton). Drawn like ipywidgets'
// Button (same classes, so the same look), but its click carries what the form's controls hold
// here, in the browser, at that moment: {event: "click", form: [[model id, trait, value], ...]}.
// ipywidgets holds a control's next update back while its previous one is unanswered and sends
// a Button's click at once, so without the values the click could reach the kernel before the
// last keystrokes did.
//
// Model traits: `description`, `icon`, `tooltip`, `disabled`, `controls` ([[model id, trait]]).
import { el, follow } from "./view.js";

function render({ model, el: host }) {
  const button = el("button", "jupyter-widgets jupyter-button widget-button");
  button.type = "button";
  host.append(button);

  // the controls' models, looked up when the list changes; a click waits for the lookup only
  // while a new form is still arriving (an already resolved promise takes no turn of events)
  let controls = Promise.resolve([]);
  const lookUp = () => {
    const list = model.get("controls") || [];
    controls = Promise.all(list.map(async ([id, key]) =>
      [id, key, await model.widget_manager.get_model(id)]));
  };

  const draw = () => {
    button.disabled = !!model.get("disabled");
    const tooltip = model.get("tooltip");
    if (tooltip) button.title = tooltip; else button.removeAttribute("title");
    const icon = model.get("icon") || "";
    const description = model.get("description") || "";
    button.textContent = "";
    if (icon) {
      const i = el("i", "fa");
      i.classList.add(...icon.split(/\s+/).filter(Boolean).map((name) => `fa-${name}`));
      if (!description) i.classList.add("center");
      button.append(i);
    }
    button.append(document.createTextNode(description));
  };

  button.addEventListener("click", async (event) => {
    event.preventDefault();
    let form = [];  // a control that cannot be read: the kernel refuses the click, and says so
    try {
      form = (await controls).map(([id, key, control]) => [id, key, control.get(key)]);
    } catch (error) {
      console.error("flowstate: a form's control could not be read", error);
    }
    model.send({ event: "click", form });
  });
  model.on("change:controls", lookUp);
  lookUp();
  const stop = follow(model, ["description", "icon", "tooltip", "disabled"], draw);
  return () => { stop(); model.off("change:controls", lookUp); };
}

export default { render };
