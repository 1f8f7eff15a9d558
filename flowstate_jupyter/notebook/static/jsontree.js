// jsontree.js: a collapsible tree with change marks, for JSON values and other trees.
//
// One ES module, no dependencies, no build step. The views of flowstate_jupyter import it
// (`import { Tree } from "./jsontree.js"`; the Python side resolves that import, see
// notebook/_assets.py), and any other view can: a trace view draws spans as a tree by giving
// its own adapter and a `decorate` hook that adds duration bars.
//
//   const tree = new Tree({ expandDepth: 1 });
//   parent.append(tree.element);
//   tree.set(value);                  // first call: draw
//   const changed = tree.set(next);   // later calls: redraw, keeping what is open, and mark
//                                     // the rows whose value changed (class "fs-changed",
//                                     // which fades through CSS; see the package's theme CSS)
//
// Options of `new Tree(options)`:
//   adapter      how nodes are read (default `jsonAdapter()`); see below
//   expandDepth  containers at a depth below this start open (top rows are depth 0; default 1)
//   rootLabel    label of a root row; `null` (default): an object's entries are the top rows
//   decorate     `(row, node, path) => void`, called for each row after it is built
//   onToggle     `(path, open) => void`, called when a person opens or closes a row
//   empty        text shown for an empty root (default "(empty)")
//
// Its style sheet is jsontree.css beside this file (load it with the view's CSS).
//
// Methods: `set(value, {mark})` returns the Set of changed path strings; `expand(path)`,
// `collapse(path)`, `toggle(path)`, `isOpen(path)`, `expandAll()`, `collapseAll()`; `rows()`
// lists the row elements. A path is the list of keys from the root; as a string (the rows'
// `data-path` attribute and what the methods take) its keys are joined by ".":
// ["plan", "steps", 2] -> "plan.steps.2".
//
// An adapter is `{ children(node) -> [[key, child], ...] | null, summary(node) -> string,
// leaf(node) -> {text, cls}, equal(a, b) -> boolean }`. `jsonAdapter()` reads JSON: objects
// and arrays have children, and `{"$more": N}` (how the Python side bounds large values) reads
// as "... N more".

export const MORE = "$more";

function isMore(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    && Object.keys(value).length === 1 && typeof value[MORE] === "number";
}

function jsonEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a), kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k, i) => k === kb[i] && jsonEqual(a[k], b[k]));
}

export function jsonAdapter() {
  return {
    children(node) {
      if (node === null || typeof node !== "object" || isMore(node)) return null;
      return Array.isArray(node) ? node.map((v, i) => [i, v]) : Object.entries(node);
    },
    summary(node) {
      const n = Array.isArray(node) ? node.filter((v) => !isMore(v)).length
        : Object.keys(node).filter((k) => k !== MORE).length;
      const more = Array.isArray(node) ? node.find(isMore) : (MORE in node ? node : null);
      const total = n + (more ? more[MORE] : 0);
      return Array.isArray(node) ? `[${total} item${total === 1 ? "" : "s"}]`
        : `{${total} key${total === 1 ? "" : "s"}}`;
    },
    leaf(node) {
      if (isMore(node)) return { text: `\u2026 ${node[MORE].toLocaleString()} more`, cls: "fs-more" };
      if (node === null) return { text: "null", cls: "fs-null" };
      if (typeof node === "string") return { text: JSON.stringify(node), cls: "fs-str" };
      if (typeof node === "number") return { text: String(node), cls: "fs-numv" };
      if (typeof node === "boolean") return { text: String(node), cls: "fs-bool" };
      if (Array.isArray(node)) return { text: "[]", cls: "fs-count" };
      if (typeof node === "object") return { text: "{}", cls: "fs-count" };
      return { text: String(node), cls: "" };
    },
    equal: jsonEqual,
  };
}

export function pathString(path) {
  return path.join(".");
}

// The smallest paths whose values differ between `a` and `b`: a changed leaf, an added or
// removed entry, or a container whose kind changed. Containers of the same kind recurse.
export function changedPaths(a, b, adapter = jsonAdapter(), path = [], out = new Set()) {
  if (adapter.equal(a, b)) return out;
  const ca = a === undefined ? null : adapter.children(a);
  const cb = b === undefined ? null : adapter.children(b);
  if (ca && cb && Array.isArray(a) === Array.isArray(b)) {
    const ma = new Map(ca.map(([k, v]) => [String(k), v]));
    const mb = new Map(cb.map(([k, v]) => [String(k), v]));
    for (const key of new Set([...ma.keys(), ...mb.keys()])) {
      changedPaths(ma.get(key), mb.get(key), adapter, [...path, key], out);
    }
    return out;
  }
  out.add(pathString(path));
  return out;
}

export class Tree {
  constructor(options = {}) {
    this.adapter = options.adapter || jsonAdapter();
    this.expandDepth = options.expandDepth ?? 1;
    this.rootLabel = options.rootLabel ?? null;
    this.decorate = options.decorate || null;
    this.onToggle = options.onToggle || null;
    this.emptyText = options.empty ?? "(empty)";
    this.element = document.createElement("div");
    this.element.className = "fs-tree";
    this.element.setAttribute("role", "tree");
    this._open = new Map(); // path string -> open? (only rows a person or a method toggled)
    this._value = undefined;
    this._drawn = false;
  }

  // Show `value`. After the first call, rows whose value changed are marked (`mark: false`
  // to skip); marks stay until the next change. Returns the Set of changed path strings.
  set(value, { mark = true } = {}) {
    // An equal value changes nothing: the rows (and their marks, mid-fade) stay as they are.
    if (this._drawn && this.adapter.equal(this._value, value)) return new Set();
    const changed = this._drawn ? changedPaths(this._value, value, this.adapter) : new Set();
    this._value = value;
    this._draw();
    if (mark && this._drawn) this._mark(changed);
    this._drawn = true;
    return changed;
  }

  isOpen(path, depth = null) {
    const key = typeof path === "string" ? path : pathString(path);
    if (this._open.has(key)) return this._open.get(key);
    const d = depth ?? (key === "" ? 0 : key.split(".").length - (this.rootLabel === null ? 1 : 0));
    return d < this.expandDepth;
  }

  expand(path) { this._setOpen(path, true); }
  collapse(path) { this._setOpen(path, false); }
  toggle(path) { this._setOpen(path, !this.isOpen(path)); }

  expandAll() { this._all(true); }
  collapseAll() { this._all(false); }

  rows() {
    return Array.from(this.element.querySelectorAll(".fs-row"));
  }

  row(path) {
    const key = typeof path === "string" ? path : pathString(path);
    return this.rows().find((r) => r.dataset.path === key) || null;
  }

  _all(open) {
    const walk = (node, path) => {
      const kids = this.adapter.children(node);
      if (!kids || !kids.length) return;
      this._open.set(pathString(path), open);
      for (const [k, v] of kids) walk(v, [...path, k]);
    };
    walk(this._value, []);
    this._draw();
  }

  _setOpen(path, open) {
    const key = typeof path === "string" ? path : pathString(path);
    this._open.set(key, open);
    this._draw();
    if (this.onToggle) this.onToggle(key, open);
  }

  _draw() {
    const el = this.element;
    el.textContent = "";
    const kids = this.adapter.children(this._value);
    if (this.rootLabel === null && kids) {
      if (!kids.length) {
        const empty = document.createElement("div");
        empty.className = "fs-muted";
        empty.textContent = this.emptyText;
        el.append(empty);
        return;
      }
      for (const [k, v] of kids) el.append(this._node(k, v, [k], 0));
    } else {
      el.append(this._node(this.rootLabel, this._value, [], 0));
    }
  }

  _node(key, node, path, depth) {
    const wrap = document.createElement("div");
    wrap.className = "fs-node";
    const row = document.createElement("div");
    row.className = "fs-row";
    row.dataset.path = pathString(path);
    row.setAttribute("role", "treeitem");
    wrap.append(row);
    const kids = this.adapter.children(node);
    const container = kids !== null && kids.length > 0;
    const open = container && this.isOpen(path, depth);
    if (container) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "fs-toggle";
      button.setAttribute("aria-expanded", String(open));
      button.setAttribute("aria-label", open ? "collapse" : "expand");
      button.textContent = open ? "\u25BE" : "\u25B8";
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        this._setOpen(path, !open);
      });
      row.append(button);
      row.classList.add("fs-container");
      row.setAttribute("aria-expanded", String(open));
    } else {
      const pad = document.createElement("span");
      pad.className = "fs-pad";
      row.append(pad);
    }
    const content = document.createElement("span");
    content.className = "fs-content";
    row.append(content);
    if (key !== null && key !== undefined) {
      const k = document.createElement("span");
      k.className = "fs-key";
      k.textContent = String(key);
      content.append(k, document.createTextNode(": "));
    }
    const value = document.createElement("span");
    if (container) {
      value.className = "fs-value fs-count";
      value.textContent = this.adapter.summary(node);
      content.addEventListener("click", () => this._setOpen(path, !open));
      content.style.cursor = "pointer";
    } else {
      const leaf = this.adapter.leaf(node);
      value.className = `fs-value ${leaf.cls}`.trim();
      value.textContent = leaf.text;
    }
    content.append(value);
    if (this.decorate) this.decorate(row, node, pathString(path));
    if (open) {
      const box = document.createElement("div");
      box.className = "fs-kids";
      box.setAttribute("role", "group");
      for (const [k, v] of kids) box.append(this._node(k, v, [...path, k], depth + 1));
      wrap.append(box);
    }
    return wrap;
  }

  // Mark, for each changed path, the row that shows it: its own row, else the nearest drawn
  // ancestor (a closed container, or the parent of a removed entry).
  _mark(changed) {
    if (!changed.size) return;
    const rows = new Map(this.rows().map((r) => [r.dataset.path, r]));
    for (const path of changed) {
      const parts = path === "" ? [] : path.split(".");
      for (let n = parts.length; n >= 0; n--) {
        const row = rows.get(parts.slice(0, n).join("."));
        if (row) {
          row.classList.add("fs-changed");
          break;
        }
      }
    }
  }
}
