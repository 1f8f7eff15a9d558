// view.js: what every flowstate view shares: elements, readable times, and the header that
// says the view is live and when it last changed.

export function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== undefined) node.textContent = String(text);
  return node;
}

const pad = (n) => String(n).padStart(2, "0");

// A Unix time (seconds) as local "HH:MM:SS" today, "Mon 14:03:07" this week, else with the
// date (the same rule as the Python side's html.when).
export function when(ts) {
  if (!ts) return "never";
  const t = new Date(ts * 1000);
  const now = new Date();
  const hms = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((day(now) - day(t)) / 86400000);
  if (days === 0) return hms;
  if (days > 0 && days < 7) return `${t.toLocaleDateString(undefined, { weekday: "short" })} ${hms}`;
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${pad(t.getHours())}:${pad(t.getMinutes())}`;
}

export function fullTime(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "";
}

// The header of a view: title, subtitle, and "live · changed HH:MM:SS".
export function header(title) {
  const root = el("div", "fs-head");
  const titleEl = el("span", "fs-title", title);
  const sub = el("span", "fs-sub");
  const live = el("span", "fs-live");
  const dot = el("span", "fs-dot");
  dot.setAttribute("aria-hidden", "true");
  const liveText = el("span", "fs-live-text", "live");
  const changed = el("span", "fs-changed-at");
  live.append(dot, liveText, changed);
  root.append(titleEl, sub, live);
  return {
    element: root,
    setTitle(text) { titleEl.textContent = text; },
    setSubtitle(text) { sub.textContent = text || ""; },
    setLive(on, text = null) {
      dot.classList.toggle("fs-off", !on);
      liveText.textContent = text || (on ? "live" : "not live");
    },
    setChanged(ts) {
      changed.textContent = ts ? ` \u00b7 changed ${when(ts)}` : "";
      changed.title = fullTime(ts);
    },
  };
}

// Keep a view in step with its model: calls `draw()` now and after changes of any of
// `traits`; returns the function that stops listening.
export function follow(model, traits, draw) {
  // One message can change several traits: draw once, after all of them.
  let queued = false;
  const handler = () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => { queued = false; draw(); });
  };
  for (const name of traits) model.on(`change:${name}`, handler);
  draw();
  return () => { for (const name of traits) model.off(`change:${name}`, handler); };
}

// Say when the kernel behind a view is gone. When its kernel restarts or stops, ipywidgets
// sets the model's `comm_live` to false and triggers "comm_live_update" (anywidget calls the
// handler with the view as `this`, whose `model` is the real one). The view then loses its
// "fs-view" class, so the theme CSS shows the snapshot output before it instead, and, given a
// header, says that it is not live. `box` is the element that carries "fs-view".
export function watchKernel(model, el, box, head = null) {
  const update = (live) => {
    box.classList.toggle("fs-view", live);
    box.classList.toggle("fs-dead", !live);
    if (head) head.setLive(live, live ? null : "not live: the kernel restarted or stopped; run the cell again");
  };
  model.on("comm_live_update", function onLive() {
    const real = this && this.model;
    const live = real && typeof real.comm_live === "boolean" ? real.comm_live
      : !el.classList.contains("jupyter-widgets-disconnected");
    queueMicrotask(() => update(live));
  });
}
