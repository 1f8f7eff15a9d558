// trace.js: the trace view (TraceView): a run's spans as a tree with duration bars and status
// marks; a span, clicked, opens its input, output, changes and error below the tree.
//
// Model traits (set by notebook/traceview.py): `trace` (model/traceview.py trace_view: the
// run and its spans, each with its bar already laid out), `selected` (the path of the span
// shown below; the view sets it on a click), `changed_at`, `live`, `title`.
//
// The tree is jsontree.js's Tree with an adapter over spans: a node is {span, kids}; rows are
// keyed by child index (a span's name may hold dots), and `decorate` draws each row's line.
import { Tree } from "./jsontree.js";
import { el, follow, header, watchKernel } from "./view.js";

const MARKS = { ok: "ok", error: "error", suspended: "waiting", running: "running" };

function took(ms) {
  if (ms === null || ms === undefined) return "\u2026";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return ms >= 0.1 ? `${ms.toFixed(1)} ms` : `${Math.round(ms * 1000)} \u00b5s`;
}

// {kids: [...]} from the spans: each under its parent, siblings in start order.
function nest(spans) {
  const byPath = new Map();
  const root = { span: null, kids: [] };
  const nodes = spans.map((span) => ({ span, kids: [] }));
  for (const node of nodes) if (!byPath.has(node.span.path)) byPath.set(node.span.path, node);
  for (const node of nodes) {
    const parent = node.span.parent !== null && byPath.get(node.span.parent);
    (parent && parent !== node ? parent : root).kids.push(node);
  }
  return root;
}

const spanAdapter = {
  children(node) {
    return node && node.kids && node.kids.length ? node.kids.map((k, i) => [i, k]) : null;
  },
  summary() { return ""; },
  leaf() { return { text: "", cls: "" }; },
  equal(a, b) { return JSON.stringify(a) === JSON.stringify(b); },
};

function valueBlock(name, value, label = name) {
  const part = el("div", "fs-span-part");
  part.dataset.part = name;
  part.append(el("div", "fs-section", label));
  if (value !== null && typeof value === "object" && Object.keys(value).length) {
    const tree = new Tree({ expandDepth: 2 });
    tree.set(value);
    part.append(tree.element);
  } else if (typeof value === "string" && value.includes("\n")) {
    part.append(el("pre", "fs-pre", value));  // text on several lines reads best as it is
  } else {
    part.append(el("pre", "fs-json", JSON.stringify(value)));
  }
  return part;
}

function details(span) {
  const box = el("div", "fs-span-detail");
  box.dataset.span = span.path;
  const head = el("div", "fs-head");
  head.append(el("span", "fs-title fs-code", span.path));
  const facts = [span.kind + (span.block !== span.name.split("/").pop() ? ` \u00b7 ${span.block}` : ""),
    MARKS[span.status] || span.status, `started +${took(span.started_ms)}`,
    `took ${took(span.duration_ms)}`];
  if (span.attempt > 1) facts.push(`attempt ${span.attempt}`);
  head.append(el("span", "fs-sub", facts.join(" \u00b7 ")));
  box.append(head);
  if (span.error) {
    const part = el("div", "fs-span-part");
    part.dataset.part = "error";
    part.append(el("div", "fs-section", "error"),
      el("div", "fs-error", `${span.error.type}: ${span.error.message}`));
    const tb = el("details", "fs-traceback");
    tb.open = !!span.origin;
    const text = el("pre", "fs-pre fs-traceback-text", span.error.traceback);
    tb.append(el("summary", "fs-sub", "traceback"), text);
    // its end says the most (the block's own line): show that first
    const toEnd = () => { text.scrollTop = text.scrollHeight; };
    tb.addEventListener("toggle", toEnd);
    requestAnimationFrame(toEnd);
    part.append(tb);
    box.append(part);
  }
  box.append(valueBlock("input", span.input));
  if (span.status === "ok") {
    box.append(valueBlock("output", span.output,
      span.output_type ? `output (${span.output_type})` : "output"));
  }
  const changes = el("div", "fs-span-part");
  changes.dataset.part = "changes";
  changes.append(el("div", "fs-section", `changes (${span.changes.length})`));
  if (!span.changes.length) {
    changes.append(el("div", "fs-muted", "(this block committed no changes)"));
  }
  for (const change of span.changes) {
    const item = el("div", "fs-change");
    item.append(el("div", "fs-code", change.label));
    if (change.change) {
      const tree = new Tree({ expandDepth: 1 });
      tree.set(change.change);
      item.append(tree.element);
    }
    changes.append(item);
  }
  box.append(changes);
  return box;
}

function render({ model, el: host }) {
  const root = el("div", "fs-card fs-view fs-trace-view");
  const head = header(model.get("title") || "trace");
  const spansBox = el("div", "fs-spans");
  const hint = el("div", "fs-sub fs-note");
  const detailBox = el("div", "fs-span-details");
  root.append(head.element, spansBox, hint, detailBox);
  host.append(root);
  watchKernel(model, host, root, head);

  let rowsByPath = new Map();
  let lastSpans = new Map(); // path -> JSON of the span as last drawn (for change marks)
  let drawnTree = null;
  const select = (path) => {
    model.set("selected", path);
    model.save_changes();
  };

  const tree = new Tree({
    adapter: spanAdapter,
    expandDepth: 64,
    empty: "(no spans: the run kept no trace)",
    onToggle() { showSelected(); },
    decorate(row, node) {
      const span = node.span;
      if (!span) return;
      row.dataset.span = span.path;
      row.classList.add("fs-span-row");
      row.tabIndex = 0;
      rowsByPath.set(span.path, row);
      const line = el("span", "fs-content fs-span-line");
      const dot = el("span", `fs-span-dot fs-st-${span.status}`);
      dot.title = span.status;
      dot.setAttribute("aria-hidden", "true");
      line.append(dot, el("span", "fs-span-name", span.name));
      const last = span.name.split("/").pop();
      const attempts = ((model.get("trace") || {}).attempt || 1) > 1;
      line.append(el("span", "fs-sub fs-span-kind",
        span.kind + (span.block !== last ? ` \u00b7 ${span.block}` : "")
        + (attempts ? ` \u00b7 attempt ${span.attempt}` : "")));
      if (span.status !== "ok") {
        const mark = MARKS[span.status] || span.status;
        line.append(el("span", `fs-span-status fs-${mark}`, mark));
      }
      const track = el("span", "fs-bar-track");
      track.setAttribute("aria-hidden", "true");
      const bar = el("span", `fs-bar fs-st-${span.status}`);
      bar.style.marginLeft = `${span.bar[0]}%`;
      bar.style.width = `max(2px, ${span.bar[1]}%)`;
      track.append(bar);
      line.append(track, el("span", "fs-sub fs-span-took", took(span.duration_ms)));
      row.querySelector(".fs-content").replaceWith(line);
      row.setAttribute("aria-label", `${span.name}: ${span.status}, ${took(span.duration_ms)}`);
      line.addEventListener("click", () => select(span.path));
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          select(span.path);
        }
      });
    },
  });
  spansBox.append(tree.element);

  const showSelected = () => {
    const path = model.get("selected") || "";
    const spans = (model.get("trace") || {}).spans || [];
    const span = spans.filter((s) => s.path === path).pop();
    for (const [p, row] of rowsByPath) {
      row.classList.toggle("fs-selected", p === path);
      row.setAttribute("aria-selected", String(p === path));
    }
    detailBox.textContent = "";
    if (span) detailBox.append(details(span));
    hint.textContent = spans.length
      ? (span ? "" : "click a span to see its input, output, changes and error") : "";
  };

  const draw = () => {
    const view = model.get("trace") || { spans: [] };
    head.setTitle(model.get("title") || `trace of run ${view.request_id || ""}`);
    head.setSubtitle(view.subtitle || "");
    if (!root.classList.contains("fs-dead")) head.setLive(model.get("live"));
    head.setChanged(model.get("changed_at"));
    const spans = view.spans || [];
    const nested = nest(spans);
    const text = JSON.stringify(nested);
    if (text !== drawnTree) {
      drawnTree = text;
      rowsByPath = new Map();
      tree.set(nested, { mark: false });
    }
    const now = new Map(spans.map((s) => [s.path, JSON.stringify(s)]));
    if (lastSpans.size) {  // mark the spans that changed since the last update
      for (const [path, text] of now) {
        if (lastSpans.get(path) !== text && rowsByPath.has(path)) {
          rowsByPath.get(path).classList.add("fs-changed");
        }
      }
    }
    lastSpans = now;
    showSelected();
  };

  const stopTrace = follow(model, ["trace", "changed_at", "live", "title"], draw);
  const stopSelected = follow(model, ["selected"], showSelected);
  return () => { stopTrace(); stopSelected(); };
}

export default { render };
