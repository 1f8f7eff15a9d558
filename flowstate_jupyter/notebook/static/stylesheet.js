// stylesheet.js: the view of StyleSheet, a widget that draws nothing. Its CSS loads the
// views' style sheet into the page; inside a view made of ipywidgets (History, FlowRunner: an
// element with class "fs-box") it also tells that view when its kernel is gone.
import { watchKernel } from "./view.js";

function render({ model, el }) {
  el.style.display = "none";
  let attached = false;
  const attach = () => {
    const box = el.parentElement ? el.parentElement.closest(".fs-box") : null;
    if (box && !attached) {
      attached = true;
      watchKernel(model, el, box);
    }
  };
  queueMicrotask(attach);
  requestAnimationFrame(attach);
}

export default { render };
