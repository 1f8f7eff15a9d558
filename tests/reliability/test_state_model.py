"""Model-based tests: random sequences of scope-state operations against a plain-Python model.

Hypothesis drives a :class:`RuleBasedStateMachine` through ``patch_state``, ``set_state``,
``inc_state``, ``push_state``, ``set_state_record``, ``delete_state_record`` and
``atomic_state`` with valid values and refused ones (wrong type, unknown field, non-JSON,
oversize). A few lines of plain Python (``Model``) say what each call must do: return
True/False or raise ``ValidationError``, and what state and version follow. After every step
the stored state, version, history (bounded, contiguous, newest = stored state) and change log
(one item per committed write, none otherwise) must agree with the model. Runs on every
backend in ``reliability_support.BACKENDS``.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from reliability_support import (
    PROFILE_DEFAULTS,
    SQL_STRINGS,
    ChangeCursor,
    Profile,
    new_id,
    second_view,
)

import flowstate_jupyter as fs
from flowstate_jupyter.errors import ValidationError

MAX_STATE_BYTES = 16 * 1024
HISTORY_LIMIT = 7
CHANGELOG_LIMIT = 15
FIELDS = tuple(PROFILE_DEFAULTS)

# ---------------------------------------------------------------------------- values
# Every generated value carries its kind: "ok", or why the write must be refused.

TEXT = st.text(max_size=12) | st.sampled_from(SQL_STRINGS)
KEYS = st.text(min_size=0, max_size=6) | st.sampled_from(SQL_STRINGS)

VALID: dict[str, st.SearchStrategy] = {
    "count": st.integers(-10**6, 10**6),
    "ratio": st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    | st.integers(-1000, 1000),
    "name": TEXT,
    "mode": st.sampled_from(["chat", "agent"]),
    "tags": st.lists(TEXT, max_size=3),
    "scores": st.dictionaries(KEYS, st.integers(-1000, 1000), max_size=3),
}
# Values pydantic refuses for the field even in lax mode (no numeric strings, no bools).
WRONG: dict[str, list] = {
    "count": ["abc", [1], {"a": 1}, None, 1.5],
    "ratio": ["abc", [1.0], None, {"x": 1.0}],
    "name": [5, [], None, {"a": "b"}, 1.5],
    "mode": ["Chat", "", "other", 1, None],
    "tags": ["abc", [1], [None], 5, {"a": 1}],
    "scores": [{"a": "x"}, {"a": 1.5}, [1], "abc", {"a": None}],
}
NOT_JSON = [set(), {1, 2}, frozenset(), datetime.datetime(2024, 1, 1), datetime.date(2024, 1, 1),
            float("nan"), float("inf"), float("-inf"), b"bytes", bytearray(b"x"), (1, 2),
            ("a",), decimal.Decimal("1.5"), complex(1, 2), {1: "int key"}, ["ok", {3}],
            {"nested": {"deep": [datetime.time(1, 2)]}}]
OVERSIZE = "x" * (MAX_STATE_BYTES + 100)


def _tag(kind: str) -> Callable[[Any], tuple[Any, str]]:
    return lambda value: (value, kind)


def field_value(field: str) -> st.SearchStrategy:
    valid = VALID[field].map(_tag("ok"))
    options = [valid, valid, valid, valid,  # mostly valid, so states grow and change
               st.sampled_from(WRONG[field]).map(_tag("wrong_type")),
               st.sampled_from(NOT_JSON).map(_tag("not_json"))]
    if field in ("name", "tags"):
        options.append(st.just(OVERSIZE if field == "name" else [OVERSIZE]).map(_tag("ok")))
    return st.one_of(options)


@st.composite
def field_updates(draw: Any, min_size: int = 1) -> tuple[dict, str]:
    """A dict of field -> value, and "ok" or the first reason it must be refused."""
    chosen = draw(st.lists(st.sampled_from(FIELDS), min_size=min_size, max_size=3, unique=True))
    update, verdict = {}, "ok"
    for f in chosen:
        value, kind = draw(field_value(f))
        update[f] = value
        if kind != "ok" and verdict == "ok":
            verdict = kind
    if draw(st.integers(0, 9)) == 0:  # now and then a field the schema does not have
        update[draw(st.sampled_from(["cuont", "nmae", "tag", "'; DROP TABLE records; --"]))] = 1
        verdict = "unknown_field" if verdict == "ok" else verdict
    return update, verdict


# ---------------------------------------------------------------------------- the model

REFUSED = "refused"


class Model:
    """The semantics of docs/concepts.md, 'State operations', in plain Python: state, version,
    outcome of each call."""

    def __init__(self) -> None:
        self.state: dict = json.loads(json.dumps(PROFILE_DEFAULTS))
        self.version = 0

    @staticmethod
    def normalise(field: str, value: Any) -> Any:
        return float(value) if field == "ratio" else value

    def outcome(self, new: dict | str) -> str | dict:
        """REFUSED, "noop" or the new state (after the size limit)."""
        if new == REFUSED:
            return REFUSED
        assert isinstance(new, dict)
        size = len(json.dumps(new, ensure_ascii=False).encode("utf-8"))
        if size > MAX_STATE_BYTES:
            return REFUSED
        return "noop" if new == self.state else new

    def patch(self, update: dict, verdict: str) -> dict | str:
        if verdict != "ok":
            return REFUSED
        return {**self.state, **{f: self.normalise(f, v) for f, v in update.items()}}

    def set(self, new: dict, verdict: str) -> dict | str:
        if verdict != "ok":
            return REFUSED
        return {**PROFILE_DEFAULTS, **{f: self.normalise(f, v) for f, v in new.items()}}

    def inc(self, field: str, by: Any, by_kind: str) -> dict | str:
        if by_kind != "ok" or field not in ("count", "ratio"):
            return REFUSED  # not a number, not JSON, unknown field or a non-number field
        result = self.state[field] + by
        if isinstance(result, float) and not math.isfinite(result):
            return REFUSED
        return {**self.state, field: self.normalise(field, result)}

    def push(self, field: str, value: Any, kind: str) -> dict | str:
        if kind != "ok" or field != "tags":
            return REFUSED
        return {**self.state, "tags": [*self.state["tags"], value]}

    def set_record(self, field: str, key: Any, value: Any, kind: str) -> dict | str:
        if kind != "ok" or field != "scores" or not isinstance(key, str):
            return REFUSED
        return {**self.state, "scores": {**self.state["scores"], key: value}}

    def delete_record(self, field: str, key: str) -> dict | str:
        if field != "scores":
            return REFUSED  # a field that holds no dict
        return {**self.state, "scores": {k: v for k, v in self.state["scores"].items()
                                         if k != key}}


OPERATION = {"patch": "patch", "set": "set", "inc": "increment", "push": "push",
             "set_record": "set_record", "delete_record": "delete_record", "atomic": "atomic"}


# ---------------------------------------------------------------------------- the machine

def machine_for(backend: Any) -> type[RuleBasedStateMachine]:
    """The state machine on one backend; every example gets a new store object and scope."""

    class ScopeStateMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = backend.open(max_state_bytes=MAX_STATE_BYTES,
                                      history_limit=HISTORY_LIMIT,
                                      changelog_limit=CHANGELOG_LIMIT)
            self.scope_id = new_id("model")
            self.handle = fs.ScopeHandle(self.store, "session", self.scope_id, state=Profile)
            # A second writer (on its own store object where the backend has shared storage,
            # like another process): switching between the two leaves each one's memory of
            # its last write stale, which every operation must notice.
            self.other_store = backend.open(max_state_bytes=MAX_STATE_BYTES,
                                            history_limit=HISTORY_LIMIT,
                                            changelog_limit=CHANGELOG_LIMIT) \
                if backend.shared else self.store
            self.other = fs.ScopeHandle(self.other_store, "session", self.scope_id,
                                        state=Profile)
            self.model = Model()
            self.cursor = ChangeCursor(self.store)

        def teardown(self) -> None:
            try:
                # what reached the store, read afresh
                with second_view(backend, self.store) as other:
                    record = other.read("session", self.scope_id)
                    if self.model.version:
                        assert record is not None
                        assert (record.version, record.state) == \
                            (self.model.version, self.model.state)
                    else:
                        assert record is None, "refused and no-op writes store nothing"
            finally:
                self.store.close()
                self.other_store.close()

        # -- the one checker every rule goes through --------------------------------------
        def check(self, op: str, call: Callable[[], bool], expected: dict | str) -> None:
            outcome = self.model.outcome(expected)
            event(f"{op}: {outcome if isinstance(outcome, str) else 'commit'}")
            if outcome == REFUSED:
                try:
                    result = call()
                except ValidationError as exc:
                    assert "session" in str(exc) and self.scope_id in str(exc), \
                        f"the error names the scope: {exc}"
                else:
                    raise AssertionError(f"{op} should have been refused, returned {result!r}")
                assert self.cursor.new() == [], "a refused write emits nothing"
                return
            result = call()
            if outcome == "noop":
                assert result is False, f"{op}: nothing changed, so False"
                assert self.cursor.new() == [], "the no-op guard emits nothing"
                return
            assert result is True, f"{op}: a committed write returns True"
            self.model.state = outcome  # type: ignore[assignment]
            self.model.version += 1
            events = self.cursor.new()
            assert len(events) == 1, f"one change-log item per committed write, got {events}"
            item = events[0]
            assert item["type"] == "state_change"
            assert (item["scope"], item["scope_id"]) == ("session", self.scope_id)
            assert item["operation"] == OPERATION[op]
            assert item["version"] == self.model.version
            newest = self.handle.history(limit=1)[0]
            assert newest.operation == OPERATION[op]

        # -- rules --------------------------------------------------------------------------
        @rule()
        def switch_writer(self) -> None:
            self.handle, self.other = self.other, self.handle

        @rule(update=field_updates())
        def patch_state(self, update: tuple[dict, str]) -> None:
            fields, verdict = update
            self.check("patch", lambda: self.handle.patch_state(fields),
                       self.model.patch(fields, verdict))

        @rule(update=field_updates(min_size=0), as_model=st.booleans())
        def set_state(self, update: tuple[dict, str], as_model: bool) -> None:
            fields, verdict = update
            if as_model and verdict == "ok":  # a model instance works like its dict
                value: Any = Profile(**fields)
            else:
                value = fields
            self.check("set", lambda: self.handle.set_state(value),
                       self.model.set(fields, verdict))

        @rule(field=st.sampled_from(["count", "ratio", "name", "mode", "tags", "scores",
                                     "cuont"]),
              by=st.one_of(st.integers(-1000, 1000).map(_tag("ok")),
                           st.just(0).map(_tag("ok")),
                           st.sampled_from(["1", None, True, [1], {"a": 1}]).map(_tag("wrong")),
                           st.sampled_from([float("nan"), float("inf"), {2}, (1,)])
                           .map(_tag("not_json"))))
        def inc_state(self, field: str, by: tuple[Any, str]) -> None:
            value, kind = by
            self.check("inc", lambda: self.handle.inc_state({field: value}),
                       self.model.inc(field, value, kind))

        @rule(by=st.one_of(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                           st.sampled_from([1e308, -1e308, 0.5, 1e-300]))
              .map(_tag("ok")))
        def inc_ratio(self, by: tuple[Any, str]) -> None:
            value, kind = by  # floats: rounding, overflow to infinity (refused)
            self.check("inc", lambda: self.handle.inc_state(ratio=value),
                       self.model.inc("ratio", value, kind))

        @rule(field=st.sampled_from(["tags", "tags", "tags", "count", "scores", "tgas"]),
              value=st.one_of(TEXT.map(_tag("ok")), TEXT.map(_tag("ok")),
                              st.sampled_from([1, None, ["x"]]).map(_tag("wrong_type")),
                              st.sampled_from(NOT_JSON).map(_tag("not_json"))))
        def push_state(self, field: str, value: tuple[Any, str]) -> None:
            item, kind = value
            self.check("push", lambda: self.handle.push_state(field, item),
                       self.model.push(field, item, kind))

        @rule(field=st.sampled_from(["scores", "scores", "scores", "name", "tags", "socres"]),
              key=st.one_of(KEYS, KEYS, st.sampled_from([1, None, ("k",)])),
              value=st.one_of(st.integers(-1000, 1000).map(_tag("ok")),
                              st.integers(0, 2).map(_tag("ok")),
                              st.sampled_from(["x", 1.5, None, [1]]).map(_tag("wrong_type")),
                              st.sampled_from(NOT_JSON).map(_tag("not_json"))))
        def set_state_record(self, field: str, key: Any, value: tuple[Any, str]) -> None:
            item, kind = value
            self.check("set_record", lambda: self.handle.set_state_record(field, key, item),
                       self.model.set_record(field, key, item, kind))

        @precondition(lambda self: bool(self.model.state["scores"]))
        @rule(data=st.data())
        def delete_existing_record(self, data: st.DataObject) -> None:
            key = data.draw(st.sampled_from(sorted(self.model.state["scores"])))
            self.check("delete_record", lambda: self.handle.delete_state_record("scores", key),
                       self.model.delete_record("scores", key))

        @rule(field=st.sampled_from(["scores", "scores", "count", "tags"]), key=KEYS)
        def delete_state_record(self, field: str, key: str) -> None:
            self.check("delete_record", lambda: self.handle.delete_state_record(field, key),
                       self.model.delete_record(field, key))

        @rule(update=field_updates(), add=st.integers(-5, 5))
        def atomic_state(self, update: tuple[dict, str], add: int) -> None:
            fields, verdict = update
            seen: list[dict] = []

            def fn(snapshot: Profile) -> dict:
                seen.append(snapshot.model_dump(mode="json"))
                if verdict == "ok" and "count" not in fields:
                    return {**fields, "count": snapshot.count + add}
                return fields

            expected_fields = dict(fields)
            if verdict == "ok" and "count" not in fields:
                expected_fields["count"] = self.model.state["count"] + add
            state_before = self.model.state
            self.check("atomic", lambda: self.handle.atomic_state(fn),
                       self.model.patch(expected_fields, verdict))
            assert seen == [state_before], "fn ran once, on the current typed snapshot"

        # -- invariants -----------------------------------------------------------------------
        @invariant()
        def stored_state_and_version_match_the_model(self) -> None:
            assert self.handle.state_dict() == self.model.state
            assert self.handle.state == Profile(**self.model.state)
            assert self.handle.version == self.model.version

        @invariant()
        def history_is_bounded_contiguous_and_ends_at_the_stored_state(self) -> None:
            entries = self.handle.history(limit=None)
            assert len(entries) == min(self.model.version, HISTORY_LIMIT)
            versions = [e.version for e in entries]
            assert versions == list(range(self.model.version, self.model.version
                                          - len(entries), -1))
            if entries:
                assert entries[0].state == self.model.state

        @invariant()
        def change_log_stays_within_its_bound(self) -> None:
            assert len(self.store.changes()) <= CHANGELOG_LIMIT

    ScopeStateMachine.__name__ = f"ScopeStateMachine_{backend.kind}"
    return ScopeStateMachine


# Examples per backend: a server round trip per call makes PostgreSQL the slow one.
EXAMPLES = {"memory": 25, "sqlite": 25}


# psycopg_pool's background threads call random() when they open connections; Hypothesis would
# take that for a strategy using the random module while it generates data.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_random_operation_sequences_follow_the_plain_python_model(backend):
    run_state_machine_as_test(
        machine_for(backend),
        settings=settings(max_examples=EXAMPLES.get(backend.kind, 8), stateful_step_count=30,
                          deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.filter_too_much]))
