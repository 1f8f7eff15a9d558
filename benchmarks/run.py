"""Run every benchmark and write ``benchmarks/results/latest.{md,json,png}``.

This is what ``make bench`` calls (``QUICK=1`` in the environment, or ``--quick``, runs every
comparison small). A benchmark is any ``benchmarks/*.py`` module (not starting with ``_``, not
this file) that defines ``run(quick: bool) -> list[dict]``; see ``_common.py`` for the row
format. Each module runs in its own fresh Python process, one after another, so one
comparison's caches, threads and memory cannot disturb the next. A module that fails to import
(for example because an optional package is missing) is skipped with a note; a module whose
``run`` raises is reported as an error and makes the exit status non-zero.

Usage::

    python benchmarks/run.py [--quick] [MODULE ...]     # e.g. `python benchmarks/run.py ops`
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path[:0] = [str(HERE), str(HERE.parent)]  # _common and the package from a checkout
from _common import format_table, is_quick, verdict  # noqa: E402

REQUIRED = ("name", "unit")  # and either ours + baseline (+ ratio), or a single value
EXIT_IMPORT_FAILED = 3
EXIT_NO_RUN = 4
TIMEOUT_S = {True: 600, False: 3600}  # per module, quick / full


def discover() -> list[str]:
    """Module names of the candidate benchmarks, sorted."""
    return sorted(p.stem for p in HERE.glob("*.py")
                  if not p.name.startswith("_") and p.stem != "run")


# ------------------------------------------------------------------------------ child side

def child(module_name: str, out: Path, quick: bool) -> int:
    """Import one module, call ``run(quick)``, write its rows as JSON to ``out``."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_IMPORT_FAILED
    run = getattr(module, "run", None)
    if not callable(run):
        return EXIT_NO_RUN
    rows = run(quick)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"{module_name}.run() must return a list of dicts")
    for r in rows:
        normalise(r)
        missing = [k for k in REQUIRED if k not in r]
        if missing or "ours" not in r:
            raise TypeError(f"{module_name}: row {r!r} lacks "
                            f"{', '.join(missing) or 'ours (or value)'}")
    out.write_text(json.dumps(rows, ensure_ascii=False, default=str), encoding="utf-8")
    return 0


def normalise(r: dict) -> dict:
    """Accept the single-value row form ``{name, value, unit, ratio?}`` as ``ours`` alone."""
    if "ours" not in r and "value" in r:
        r["ours"] = r.pop("value")
    r.setdefault("baseline", None)
    if "ratio" not in r:
        ours, base = r.get("ours"), r.get("baseline")
        r["ratio"] = ours / base if isinstance(ours, (int, float)) and base else None
    return r


# ------------------------------------------------------------------------------ parent side

def run_module(name: str, quick: bool) -> dict:
    """Run one module in a fresh process. Returns {status, rows, seconds, note}."""
    if hasattr(os, "sync"):
        # The previous module may have left 100 MB of files being written back to disk; that
        # writeback slows whichever side of a comparison writes more pages. Start on a quiet disk.
        os.sync()
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        env = {**os.environ, "QUICK": "1" if quick else "", "PYTHONUNBUFFERED": "1"}
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", name, str(out)],
                env=env, cwd=str(HERE.parent), capture_output=True, text=True,
                timeout=TIMEOUT_S[quick])
        except subprocess.TimeoutExpired:
            return {"status": "error", "rows": [], "seconds": TIMEOUT_S[quick],
                    "note": f"timed out after {TIMEOUT_S[quick]} s"}
        seconds = time.perf_counter() - started
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        if proc.returncode == EXIT_IMPORT_FAILED:
            return {"status": "skipped", "rows": [], "seconds": seconds,
                    "note": f"could not be imported ({last})"}
        if proc.returncode == EXIT_NO_RUN:
            return {"status": "skipped", "rows": [], "seconds": seconds,
                    "note": "has no run(quick) function"}
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            return {"status": "error", "rows": [], "seconds": seconds,
                    "note": f"failed with exit code {proc.returncode}:\n{tail}"}
        rows = json.loads(out.read_text(encoding="utf-8"))
        for r in rows:
            r.setdefault("module", name)
        return {"status": "ok", "rows": rows, "seconds": seconds, "note": None}


def machine() -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def markdown(results: dict[str, dict], meta: dict) -> str:
    lines = ["# flowstate-jupyter benchmark results", "",
             f"{meta['date']} · {'quick' if meta['quick'] else 'full'} run · Python "
             f"{meta['python']} · SQLite {meta['sqlite']} · {meta['platform']} · "
             f"{meta['cpus']} CPUs", "",
             "`ratio` is ours / baseline: below 1 we are faster (for latencies), and `target` is "
             "the largest acceptable ratio. See `benchmarks/README.md`.", ""]
    for name, res in results.items():
        lines.append(f"## {name} ({res['status']}, {res['seconds']:.1f} s)")
        lines.append("")
        if res["note"]:
            lines += ["```", res["note"], "```", ""]
        groups: dict[str, list[dict]] = {}
        for r in res["rows"]:
            groups.setdefault(r.get("group") or name, []).append(r)
        for group, rows in groups.items():
            if len(groups) > 1 or group != name:
                lines += [f"### {group}", ""]
            lines += ["| benchmark | ours | baseline | unit | ratio | target / note |",
                      "|---|---:|---:|---|---:|---|"]
            for r in rows:
                text = verdict(r, ok="✓", missed="✗ missed", le="≤")
                if r.get("note"):
                    text = f"{text} {r['note']}".strip()
                lines.append(f"| {r['name']} | {_cell(r['ours'])} | {_cell(r.get('baseline'))} "
                             f"| {r['unit']} | {_cell(r.get('ratio'))} | {text} |")
            lines.append("")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def plot(rows: list[dict], path: Path) -> str | None:
    """A bar chart of every row's ratio with its target; returns a note if it was skipped.

    One panel per module (in run order), each with its own scale — logarithmic when its ratios
    span more than a factor of 20 — so a module whose baseline is a plain function call (ratios
    in the hundreds) does not squash the panels whose ratios sit around 1. Rows without a
    numeric baseline and ratio (single values, checked values such as lost updates) are not
    plotted.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install 'flowstate-jupyter[bench]')"
    rows = [r for r in rows if isinstance(r.get("ratio"), (int, float)) and r["ratio"] > 0
            and isinstance(r.get("baseline"), (int, float))]  # ours-vs-baseline rows only
    if not rows:
        return "no rows compare ours with a baseline: no plot"
    panels: dict[str, list[dict]] = {}
    for r in rows:
        panels.setdefault(str(r.get("module") or ""), []).append(r)
    heights = [len(p) + 1.2 for p in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(10, 0.3 * sum(heights) + 0.9),
                             gridspec_kw={"height_ratios": heights})
    for ax, (module, panel) in zip(axes[:, 0], panels.items()):
        names = [r["name"] for r in panel][::-1]
        ratios = [r["ratio"] for r in panel][::-1]
        colors = ["#c0392b" if r.get("ok") is False else "#2e86c1" for r in panel][::-1]
        ax.barh(names, ratios, color=colors)
        for i, ratio in enumerate(ratios):
            ax.text(ratio, i, f" {ratio:.2f}", va="center", fontsize=6)
        for i, r in enumerate(panel[::-1]):
            if r.get("target") is not None:
                ax.plot([r["target"], r["target"]], [i - 0.4, i + 0.4], color="black", lw=1.5)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        if max(ratios) / min(ratios) > 20:
            ax.set_xscale("log")
        ax.set_title(module or "benchmarks", fontsize=9, loc="left")
        ax.margins(x=0.08)  # room for the value labels
        ax.tick_params(axis="y", labelsize=7)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("ours / baseline (black tick: target; red: target missed; "
                           "dashed: 1)")
    fig.suptitle("flowstate-jupyter benchmarks", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return None


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        name, out = argv[1], Path(argv[2])
        return child(name, out, is_quick([]))
    quick = is_quick(argv)
    wanted = [a for a in argv if not a.startswith("-")]
    names = discover()
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}")
        return 2
    names = wanted or names
    print(f"flowstate-jupyter benchmarks ({'quick' if quick else 'full'} run): "
          f"{', '.join(names)}")
    results: dict[str, dict] = {}
    for name in names:
        print(f"\n== {name} ==", flush=True)
        try:
            res = run_module(name, quick)
        except Exception:
            res = {"status": "error", "rows": [], "seconds": 0.0,
                   "note": traceback.format_exc()}
        results[name] = res
        if res["status"] == "ok":
            print(format_table(res["rows"]))
            print(f"({res['seconds']:.1f} s)")
        else:
            print(f"{res['status']}: {name} {res['note']}")
    RESULTS.mkdir(exist_ok=True)
    meta = {**machine(), "quick": quick}
    all_rows = [r for res in results.values() for r in res["rows"]]
    payload = {"meta": meta, "rows": all_rows,
               "modules": {n: {k: v for k, v in r.items() if k != "rows"}
                           for n, r in results.items()}}
    _write(RESULTS / "latest.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    _write(RESULTS / "latest.md", markdown(results, meta) + "\n")
    note = plot(all_rows, RESULTS / "latest.png")
    written = ["latest.md", "latest.json"] + ([] if note else ["latest.png"])
    print(f"\nwrote {', '.join(str(RESULTS.relative_to(HERE.parent) / w) for w in written)}")
    if note:
        print(f"note: {note}")
    missed = [r["name"] for r in all_rows if r.get("ok") is False]
    if missed:
        print(f"target missed: {', '.join(missed)}")
    errors = [n for n, r in results.items() if r["status"] == "error"]
    if errors:
        print(f"benchmark errors: {', '.join(errors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
