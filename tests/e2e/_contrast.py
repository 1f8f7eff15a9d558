"""WCAG contrast of text as the browser draws it, measured from computed styles.

``measure(page, selector)`` looks at every element under ``selector`` that shows text (a text
node with more than white space, or a form control), takes its computed ``color`` and the
background it is drawn on (its own and its ancestors' computed ``background-color`` laid over
each other until one is opaque), lays the text colour over that background, and computes the
WCAG 2 contrast ratio. Disabled controls are left out (WCAG exempts them), as are elements not
drawn (``display: none``, hidden, no size).

Colours come as ``rgb()``, ``rgba()``, ``color(srgb r g b / a)`` (what ``color-mix`` computes
to in Chromium) or ``oklab(L a b / alpha)`` (a colour between two in an animation).
"""

from __future__ import annotations

from typing import Any

_JS = r"""
(selector) => {
  const parse = (text) => {
    let m = text.match(/^rgba?\(([^)]+)\)$/);
    if (m) {
      const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    m = text.match(/^color\(srgb ([^)]+)\)$/);
    if (m) {
      const p = m[1].split(/[ /]+/).filter(Boolean).map(Number);
      return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1];
    }
    m = text.match(/^oklab\(([^)]+)\)$/);  // what an animation between colours computes to
    if (m) {
      const p = m[1].split(/[ /]+/).filter(Boolean).map(Number);
      const [L, a, b] = p;
      const l = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3;
      const k = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3;
      const s = (L - 0.0894841775 * a - 1.2914855480 * b) ** 3;
      const enc = (v) => {
        v = Math.min(1, Math.max(0, v));
        return 255 * (v <= 0.0031308 ? 12.92 * v : 1.055 * Math.pow(v, 1 / 2.4) - 0.055);
      };
      return [enc(4.0767416621 * l - 3.3077115913 * k + 0.2309699292 * s),
              enc(-1.2684380046 * l + 2.6097574011 * k - 0.3413193965 * s),
              enc(-0.0041960863 * l - 0.7034186147 * k + 1.7076147010 * s),
              p.length > 3 ? p[3] : 1];
    }
    if (text === 'transparent') return [0, 0, 0, 0];
    return null;
  };
  const over = (top, bottom) => {  // top laid over an opaque bottom
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  };
  const background = (el) => {
    const layers = [];
    for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c[3] > 0) {
        layers.push(c);
        if (c[3] >= 1) break;
      }
    }
    let bg = [255, 255, 255, 1];
    if (layers.length && layers[layers.length - 1][3] >= 1) bg = layers.pop();
    while (layers.length) bg = over(layers.pop(), bg);
    return bg;
  };
  const lum = (c) => {
    const f = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const shown = (el) => {
    if (el.closest('[disabled], :disabled, [hidden]')) return false;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return false;
    for (let n = el; n; n = n.parentElement) {
      const s = getComputedStyle(n);
      if (s.display === 'none' || s.visibility === 'hidden') return false;
      if (Number(s.opacity) === 0) return false;
    }
    return true;
  };
  const out = [];
  for (const root of document.querySelectorAll(selector)) {
    const seen = new Set();
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const elements = [];
    while (walker.nextNode()) {
      const node = walker.currentNode;
      if (node.textContent.trim() && node.parentElement && !seen.has(node.parentElement)) {
        seen.add(node.parentElement);
        elements.push(node.parentElement);
      }
    }
    root.querySelectorAll('input, textarea, select').forEach(e => elements.push(e));
    for (const el of elements) {
      if (!shown(el)) continue;
      const fg = parse(getComputedStyle(el).color);
      if (!fg) continue;
      const bg = background(el);
      const text = over(fg, bg);
      const [hi, lo] = [lum(text), lum(bg)].sort((a, b) => b - a);
      out.push({
        ratio: (hi + 0.05) / (lo + 0.05),
        text: (el.value || el.textContent || '').trim().slice(0, 40),
        color: getComputedStyle(el).color,
        background: `rgb(${bg.slice(0, 3).map(Math.round).join(', ')})`,
        cls: String(el.className || el.tagName).slice(0, 60),
      });
    }
  }
  return out;
}
"""


def measure(page: Any, selector: str) -> list[dict]:
    """Contrast of every piece of text under ``selector`` (see the module docstring)."""
    return page.evaluate(_JS, selector)


def pause_animations(page: Any, at_ms: float = 0.0) -> None:
    """Hold every running CSS animation at ``at_ms`` (to measure a change mark at full strength)."""
    page.evaluate("""(t) => document.getAnimations().forEach(a => {
        a.pause(); a.currentTime = t; })""", at_ms)


def finish_animations(page: Any) -> None:
    page.evaluate("() => document.getAnimations().forEach(a => a.finish())")


def set_theme(page: Any, name: str) -> None:
    """Switch JupyterLab's theme (``JupyterLab Light``, ``JupyterLab Dark``, ...) and wait."""
    page.evaluate("(theme) => window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme})", name)
    page.wait_for_function("(theme) => document.body.dataset.jpThemeName === theme", arg=name,
                           timeout=20_000)
    # the new sheet is in: JupyterLab's own variables have the theme's values
    page.wait_for_function(
        "(dark) => (getComputedStyle(document.body).getPropertyValue('--jp-layout-color1')"
        ".trim() !== 'white') === dark", arg=name != "JupyterLab Light", timeout=20_000)
