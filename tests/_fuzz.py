"""What the fuzz tests of every public entry point share (issue 13 §7): hostile values, the
check made after each call, the tally of outcomes, and a typed scope with every kind of resource.

Used by ``tests/reliability/test_fuzz_entry_points.py`` (handles, resources, collections,
Windmill, the ``flowstate`` command, imports) and ``tests/notebook/test_fuzz_magics.py``.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
from collections.abc import Callable
from typing import Any

from _helpers import fingerprint
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.errors import FlowStateError

# -- hostile material ----------------------------------------------------------------------------

def _nest(depth: int, inner: Any = 1) -> Any:
    value = inner
    for _ in range(depth):
        value = [value]
    return value


def _cycle() -> list:
    loop: list = []
    loop.append(loop)
    return loop


class Color(enum.Enum):
    RED = "red"


HOSTILE_TEXT = ["\ud800", "a\udfffb", "\udc80", "\x00", "\x01\x7f", "\x1b[2J", "line\nbreak",
                "../../etc/passwd", "..", ".", "", " ", "/", "a//b", "$meta", "$wm/state/x",
                "%_", "a:b", "\u202e", "😀", "x" * 300, "session.mode", "\\", "C:\\x"]
HOSTILE_NUMBERS = [10**400, -(10**400), 2**63, 2**64 + 1, -(2**63) - 1, float("nan"),
                   float("inf"), float("-inf"), 1e308, -0.0, True, False, 0, -1]
WEIRD = [set(), frozenset({1}), b"bytes", (1, 2), object(), decimal.Decimal("1.5"),
         datetime.datetime(2024, 1, 1), Color.RED, {1: "int key"}, {("t",): 1},
         {"\ud800": 1}, {"ok": {"\udfff": 1}}]
OVERSIZE = "x" * (1024 * 1024 + 1)

#: Every hostile value, tried at every entry point (besides hypothesis's random mixes).
HOSTILE_VALUES: list[Any] = [
    *HOSTILE_TEXT, *HOSTILE_NUMBERS, *WEIRD, OVERSIZE, {"big": OVERSIZE},
    _nest(10_000), _nest(300), _nest(150), {"a": _nest(250)}, [], {}, None,
    {"notes": {"\ud800": 1}}, ["\udfff"], {"k": float("nan")}, [10**400],
]
#: Every hostile key or field name.
HOSTILE_KEYS: list[Any] = [*HOSTILE_TEXT, "count", "ratio", "name", "tags", "notes", "data",
                           1, None, 2.5, b"k", ("t",), True]

text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=12))
scalars = st.one_of(st.none(), st.sampled_from(HOSTILE_NUMBERS), st.integers(), st.floats(),
                    text)
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=6)
values = st.one_of(
    json_like, scalars,
    st.sampled_from([_nest(10_000), _nest(2_000), _nest(900), {"a": _nest(10_000)}]),
    st.just(OVERSIZE), st.just({"big": OVERSIZE}),
    st.builds(lambda: _cycle()),
    st.sampled_from(WEIRD))
keys = st.one_of(text, st.sampled_from(["count", "ratio", "name", "tags", "notes", "data"]),
                 st.sampled_from([1, None, 2.5, b"k", ("t",), True]))
ids = st.one_of(text, st.sampled_from(["s1", "a" * 129, "a" * 128]),
                st.sampled_from([None, 5, b"s1", ["s1"]]))

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

#: Store options for the fuzz tests: a short change log and history keep the check made after
#: every call (which compares them in full) quick.
SMALL_LOGS = {"changelog_limit": 64, "history_limit": 8}

TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def report() -> None:
    """Print how every kind of call ended (shown with ``pytest -s``)."""
    total = sum(sum(c.values()) for c in TALLY.values())
    print(f"\nfuzz: {total} calls")
    for kind, outcomes in sorted(TALLY.items()):
        print(f"  {kind}: {sum(outcomes.values())} calls: "
              + ", ".join(f"{name} {n}" for name, n in outcomes.most_common()))
    TALLY.clear()


_SEEN: dict[int, tuple[Any, dict]] = {}  # the store's fingerprint after the last call


def attempt(kind: str, store: Any, call: Callable[[], Any]) -> None:
    """Run ``call``; a refusal must be a library error with a short message that leaves
    ``store`` exactly as it was."""
    seen = _SEEN.get(id(store))
    before = seen[1] if seen is not None and seen[0] is store else fingerprint(store)
    try:
        call()
    except FlowStateError as exc:
        message = str(exc)
        assert message and len(message) < 4000, f"{type(exc).__name__}: {message[:300]!r}"
        after = fingerprint(store)
        assert after == before, f"{kind}: {type(exc).__name__} changed the store: {message}"
        TALLY[kind][type(exc).__name__] += 1
    else:
        after = fingerprint(store)
        TALLY[kind]["ok"] += 1
    _SEEN[id(store)] = (store, after)


# -- a scope with every kind of resource -------------------------------------------------

class Typed(BaseModel):
    count: int = 0
    ratio: float = 0.0
    name: str = ""
    tags: list[str] = []
    notes: dict[str, Any] = {}
    data: Any = None


RESOURCES = {
    "plan": fs.define_resource(Typed, writable=True),
    "free": fs.define_resource(writable=True),
    "ro": fs.define_resource(Typed),
    "files": fs.define_resource_collection(pattern="files/**", state=Typed, max_instances=4,
                                           eviction="lru"),
    "capped": fs.define_resource_collection(pattern="notes/[id]", max_instances=2),
}
