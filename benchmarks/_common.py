"""Helpers shared by the benchmark modules: timing, statistics, rows and the table.

Every benchmark module exposes ``run(quick: bool) -> list[dict]``; each row is a dict with
``name``, ``ours``, ``baseline``, ``unit`` and ``ratio`` (ours / baseline, lower is better for
latencies), and optionally ``target`` (the largest acceptable ratio; :func:`row` adds ``ok``;
for a throughput, ``better="higher"`` makes it the smallest acceptable ratio),
``group`` (a heading for the table) and ``note``. A measurement without a baseline may give
``value`` instead of ``ours`` and ``baseline``. A measurement checked against an absolute bound
rather than a ratio (lost updates must be 0) carries ``limit`` instead of ``target``
(:func:`check_row`); ``ok`` then says whether ``ours <= limit``. ``benchmarks/run.py`` collects
the rows of every module; :func:`row` and :func:`check_row` build them.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

Timer = Callable[[], int]
now_ns: Timer = time.perf_counter_ns


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``samples``, by linear interpolation."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """Median, p99 and mean of nanosecond samples, in microseconds."""
    us = [s / 1000.0 for s in samples_ns]
    return {"p50": statistics.median(us), "p99": percentile(us, 99), "mean": statistics.fmean(us),
            "n": len(us)}


def interleaved(contenders: dict[str, Callable[[int], object]], *, warmup: int, calls: int,
                chunk: int = 5, prepare: Callable[[str, int], None] | None = None,
                clock: Timer | None = None) -> dict[str, list[int]]:
    """Time several implementations of one operation, interleaved to cancel machine noise.

    Each contender ``f(i)`` is warmed up with ``warmup`` calls, then called ``calls`` more
    times, timed one by one. The timed calls alternate between contenders in chunks of
    ``chunk`` calls, in an order that rotates every round (a b c, b c a, c a b, ...), so a slow
    phase of the machine (another process, a CPU frequency change, a disk flush) hits every
    contender alike, and every contender holds every position equally often: the one whose
    chunk follows its own (a flip, a b c c b a, gives the ends two chunks in a row, with warm
    caches) measured about 4% faster than the one in the middle. ``prepare(name, i)``, if
    given, runs untimed before every call (for
    example to reset a list that would otherwise keep growing). ``clock`` (default wall time)
    may be ``time.process_time_ns`` for CPU-bound work on a busy machine: time this process
    spent waiting for a core is then not counted. Returns the per-call durations in nanoseconds
    per contender.
    """
    names = list(contenders)
    counters = dict.fromkeys(names, 0)
    samples: dict[str, list[int]] = {name: [] for name in names}
    clock = clock or now_ns

    def call(name: str, record: bool) -> None:
        i = counters[name]
        counters[name] = i + 1
        if prepare is not None:
            prepare(name, i)
        fn = contenders[name]
        t0 = clock()
        fn(i)
        elapsed = clock() - t0
        if record:
            samples[name].append(elapsed)

    for name in names:
        for _ in range(warmup):
            call(name, False)
    gc.collect()  # start measuring without garbage left over from set-up and warm-up
    rounds = -(-calls // chunk)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            for _ in range(chunk):
                call(name, True)
    return samples


def row(name: str, ours: float, baseline: float, unit: str, *, target: float | None = None,
        better: str = "lower", group: str | None = None, note: str | None = None,
        **extra: object) -> dict:
    """One result row; ``ratio`` is ours / baseline (``nan`` when the baseline is 0).

    ``target`` is the largest ratio accepted, or with ``better="higher"`` (throughputs) the
    smallest.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
    ratio = ours / baseline if baseline else math.nan
    out: dict = {"name": name, "ours": round(ours, 3), "baseline": round(baseline, 3),
                 "unit": unit, "ratio": round(ratio, 3)}
    if target is not None:
        out["target"] = target
        out["ok"] = bool(ratio >= target if better == "higher" else ratio <= target)
        if better == "higher":
            out["better"] = "higher"
    return _labelled(out, group, note, extra)


def check_row(name: str, value: float, unit: str, *, limit: float, group: str | None = None,
              note: str | None = None, **extra: object) -> dict:
    """A row checked against an absolute bound: ``ok`` is ``value <= limit``.

    For quantities where a ratio means nothing, such as lost updates (must be 0) or a count
    that must stay under a cap. ``baseline`` and ``ratio`` are ``None``, so the row is not
    plotted as a ratio.
    """
    out: dict = {"name": name, "ours": value, "baseline": None, "unit": unit, "ratio": None,
                 "limit": limit, "ok": bool(value <= limit)}
    return _labelled(out, group, note, extra)


def _labelled(out: dict, group: str | None, note: str | None, extra: dict) -> dict:
    if group is not None:
        out["group"] = group
    if note is not None:
        out["note"] = note
    out.update(extra)
    return out


def is_quick(argv: Sequence[str]) -> bool:
    """``--quick`` on the command line or ``QUICK`` set (not 0/false/no) in the environment."""
    return "--quick" in argv or os.environ.get("QUICK", "").strip().lower() not in (
        "", "0", "false", "no")


def standalone(run: Callable[[bool], list[dict]], argv: Sequence[str],
               missed: str = "missed its target") -> int:
    """What a benchmark module does when run as a script: run, print the table and notes."""
    rows = run(is_quick(argv))
    print(format_table(rows))
    for r in rows:
        if "note" in r:
            print(f"  {r['name']}: {r['note']}")
    failed = [r["name"] for r in rows if r.get("ok") is False]
    if failed:
        print(f"\n{missed}: {', '.join(failed)}")
    return 0


def verdict(r: dict, *, ok: str = "ok", missed: str = "MISSED", le: str = "<=") -> str:
    """The target column of a row: ``<= 2 ok`` (ratio target; ``>= 0.7 ok`` for a throughput)
    or ``value <= 0 ok`` (limit)."""
    if r.get("target") is not None:
        sign = ({"<=": ">=", "≤": "≥"}.get(le, ">=")) if r.get("better") == "higher" else le
        return f"{sign} {r['target']:g} " + (ok if r.get("ok") else missed)
    if r.get("limit") is not None:
        return f"value {le} {r['limit']:g} " + (ok if r.get("ok") else missed)
    return ""


def file_bytes(path: str | os.PathLike) -> int:
    """Size of a SQLite file plus its ``-wal`` file, if any (0 for a missing file)."""
    total = 0
    for p in (Path(path), Path(f"{path}-wal")):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def format_table(rows: Iterable[dict]) -> str:
    """A fixed-width text table of result rows (what the runner and modules print)."""
    rows = list(rows)
    header = ("benchmark", "ours", "baseline", "unit", "ratio", "target")
    lines: list[tuple[str, ...]] = []
    for r in rows:
        lines.append((str(r["name"]), _num(r.get("ours", r.get("value"))),
                      _num(r.get("baseline")), str(r["unit"]), _num(r.get("ratio")), verdict(r)))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = [_fmt(header, widths), _fmt(tuple("-" * w for w in widths), widths)]
    out += [_fmt(line, widths) for line in lines]
    return "\n".join(out)


def _num(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _fmt(cells: tuple[str, ...], widths: list[int]) -> str:
    first, *rest = cells
    parts = [first.ljust(widths[0])]
    parts += [c.rjust(w) if i in (0, 1, 3) else c.ljust(w)  # numbers right, words left
              for i, (c, w) in enumerate(zip(rest, widths[1:]))]
    return "  ".join(parts).rstrip()
