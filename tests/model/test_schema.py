"""Pydantic helpers for scope-state and resource schemas: flowstate_jupyter.model.schema."""

from __future__ import annotations

import copy
import json
import types
import typing
import uuid
import warnings
from typing import Literal

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, model_validator

import flowstate_jupyter as fs
from flowstate_jupyter.errors import FlowStateWarning, SchemaError, ValidationError
from flowstate_jupyter.model import schema


class ModeState(BaseModel):
    mode: Literal["chat", "agent"] = "chat"
    message_count: int = 0


class Step(BaseModel):
    title: str = ""
    done: bool = False


class PlanState(BaseModel):
    goal: str = ""
    steps: list[Step] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------- require_defaults

def test_require_defaults_refuses_a_required_field_naming_model_and_field():
    class NoDefault(BaseModel):
        mode: str

    with pytest.raises(SchemaError) as info:
        schema.require_defaults(NoDefault)
    assert str(info.value) == (
        "NoDefault.mode has no default; every field of a state schema needs one (state starts "
        "from defaults). Give it a default, e.g. `mode: str = ''`")


def test_require_defaults_suggests_a_default_factory_for_lists_and_words_the_role():
    class Files(BaseModel):
        ok: int = 0
        names: list[str]

    with pytest.raises(SchemaError) as info:
        schema.require_defaults(Files, role="resource")
    assert "Files.names has no default; every field of a resource schema" in str(info.value)
    assert "`names: list[str] = Field(default_factory=list)`" in str(info.value)


@pytest.mark.parametrize("not_a_model", [dict, ModeState(), "ModeState", 3])
def test_require_defaults_refuses_what_is_not_a_pydantic_model_class(not_a_model):
    with pytest.raises(SchemaError, match=r"must be a class deriving from pydantic\.BaseModel"):
        schema.require_defaults(not_a_model)


def test_require_defaults_accepts_none_and_models_with_defaults():
    schema.require_defaults(None)
    schema.require_defaults(PlanState)
    schema.require_defaults(PlanState)  # cached path


def test_every_helper_refuses_a_model_without_defaults():
    class NoDefault(BaseModel):
        count: int

    for call in (lambda: schema.defaults(NoDefault),
                 lambda: schema.validate_state(NoDefault, {"count": 1}, where="s"),
                 lambda: schema.read_state(NoDefault, {}, where="s", version=1)):
        with pytest.raises(SchemaError, match=r"NoDefault\.count has no default"):
            call()


# ---------------------------------------------------------------------------- defaults

def test_defaults_are_the_json_dump_of_the_model_and_empty_for_free_form():
    assert schema.defaults(ModeState) == {"mode": "chat", "message_count": 0}
    assert schema.defaults(PlanState) == {"goal": "", "steps": [], "tags": []}
    assert schema.defaults(None) == {}


def test_defaults_returns_a_fresh_copy_each_call():
    first = schema.defaults(PlanState)
    first["tags"].append("leak")
    first["goal"] = "changed"
    assert schema.defaults(PlanState) == {"goal": "", "steps": [], "tags": []}


def test_defaults_with_a_changing_default_factory_are_not_frozen_by_the_cache():
    class Item(BaseModel):
        id: str = Field(default_factory=lambda: uuid.uuid4().hex)

    assert schema.defaults(Item)["id"] != schema.defaults(Item)["id"]


# ---------------------------------------------------------------------------- check_fields

def test_check_fields_refuses_unknown_field_with_did_you_mean():
    with pytest.raises(ValidationError) as info:
        schema.check_fields(ModeState, ["mode", "mesage_count"], where="session")
    assert str(info.value) == ("session: unknown field 'mesage_count'; did you mean "
                               "'message_count'? Fields: mode, message_count")
    assert info.value.path == ("mesage_count",)


def test_check_fields_without_a_close_match_lists_the_fields_only():
    with pytest.raises(ValidationError) as info:
        schema.check_fields(ModeState, ["zzz"], where="session")
    assert "did you mean" not in str(info.value)
    assert str(info.value).endswith("Fields: mode, message_count")


def test_check_fields_accepts_known_names_and_anything_without_a_schema():
    schema.check_fields(ModeState, ["mode"], where="s")
    schema.check_fields(None, ["anything"], where="s")

    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")
        a: int = 0

    schema.check_fields(Open, ["b"], where="s")


# ---------------------------------------------------------------------------- validate_state

def test_validate_state_returns_json_and_coerces_in_lax_mode():
    assert schema.validate_state(ModeState, {"message_count": "5"}, where="s") == {
        "mode": "chat", "message_count": 5}


def test_validate_state_names_where_field_reason_input_and_expected_type():
    with pytest.raises(ValidationError) as info:
        schema.validate_state(ModeState, {"message_count": "abc"}, where="session")
    message = str(info.value)
    assert message.startswith("session: field 'message_count': Input should be a valid integer")
    assert "(got 'abc'); expected int" in message
    assert info.value.path == ("message_count",)
    assert info.value.where == "session"


def test_validate_state_names_a_bad_item_in_a_list_of_sub_models():
    data = {"steps": [{"title": "a"}, {"title": "b"}, {"title": 5}]}
    with pytest.raises(ValidationError) as info:
        schema.validate_state(PlanState, data, where="plan")
    assert str(info.value).startswith("plan: field 'steps[2].title': Input should be a valid "
                                      "string (got 5); expected str")
    assert info.value.path == ("steps", 2, "title")


def test_validate_state_shows_a_literal_as_the_expected_type():
    with pytest.raises(ValidationError, match=r"expected Literal\['chat', 'agent'\]"):
        schema.validate_state(ModeState, {"mode": "legacy"}, where="session")


def test_validate_state_refuses_unknown_fields_with_did_you_mean():
    with pytest.raises(ValidationError, match="did you mean 'message_count'"):
        schema.validate_state(ModeState, {"mesage_count": 1}, where="session")


def test_validate_state_refuses_a_non_dict():
    with pytest.raises(ValidationError, match="session: state must be a dict of fields, got list"):
        schema.validate_state(ModeState, ["chat"], where="session")
    with pytest.raises(ValidationError, match="got str"):
        schema.validate_state(None, "x", where="session")


class Stats(BaseModel):
    mean: float = 0.0


def test_encode_json_refuses_nan_that_a_float_field_lets_through_naming_the_field():
    state = schema.validate_state(Stats, {"mean": float("nan")}, where="stats")
    with pytest.raises(ValidationError, match="stats: field 'mean' holds NaN"):
        schema.encode_json(state, where="stats")


@pytest.mark.parametrize("value", [{"name": "NaN", "note": "Infinity and beyond"},
                                   {"x": 1.5, "s": "é ✓", "nested": {"l": [1, None, True]}}])
def test_encode_json_gives_json_that_reads_back_equal(value):
    assert json.loads(schema.encode_json(value, where="s")) == value


def test_encode_json_refuses_a_lone_surrogate():
    with pytest.raises(ValidationError, match="not JSON"):
        schema.encode_json({"name": "\ud800"}, where="s")


def test_a_write_of_nan_to_a_float_field_is_refused_and_nothing_is_stored():
    handle = fs.ScopeHandle(fs.open_store("memory://"), "session", "s", state=Stats)
    handle.patch_state(mean=1.5)
    with pytest.raises(ValidationError, match="field 'mean' holds NaN"):
        handle.patch_state(mean=float("nan"))
    assert (handle.state.mean, handle.version) == (1.5, 1)


class Range(BaseModel):
    """A model with a model-level validator (low <= high)."""

    low: int = 0
    high: int = 0

    @model_validator(mode="after")
    def ordered(self):
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


def test_validate_state_reports_a_model_level_validator_with_where():
    with pytest.raises(ValidationError, match=r"^range: Value error, low must not exceed high"):
        schema.validate_state(Range, {"low": 2, "high": 1}, where="range")


def test_validate_state_accepts_field_names_of_aliased_fields():
    class Aliased(BaseModel):
        user_name: str = Field(default="", alias="userName")

    assert schema.validate_state(Aliased, {"user_name": "ada"}, where="s") == {"user_name": "ada"}


def test_validate_state_without_a_schema_checks_json_and_copies():
    data = {"a": [1]}
    result = schema.validate_state(None, data, where="s")
    data["a"].append(2)
    assert result == {"a": [1]}
    with pytest.raises(ValidationError, match="holds a set"):
        schema.validate_state(None, {"a": {1}}, where="s")


# ---------------------------------------------------------------------------- read_state

def test_read_state_fills_missing_fields_with_defaults_and_ignores_dropped_ones():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = schema.read_state(ModeState, {"mode": "agent", "old_field": 1},
                                  where="session", version=2)
    assert state == {"mode": "agent", "message_count": 0}


def test_read_state_falls_back_to_default_with_warning_naming_field_and_version():
    stored = {"mode": "legacy", "message_count": 4}
    with pytest.warns(FlowStateWarning) as record:
        state = schema.read_state(ModeState, stored, where="session", version=3)
    assert state == {"mode": "chat", "message_count": 4}
    assert len(record) == 1
    assert str(record[0].message) == (
        "session v3: stored field 'mode' = 'legacy' no longer fits ModeState (Input should be "
        "'chat' or 'agent'); reading the default 'chat'. The stored value stays until the next "
        "write to this state, which stores the default.")


def test_read_state_falls_back_per_field_when_a_nested_item_is_bad():
    stored = {"goal": "ship", "steps": [{"title": "a"}, {"title": 5}]}
    with pytest.warns(FlowStateWarning, match=r"'steps'.*steps\[1\]\.title"):
        state = schema.read_state(PlanState, stored, where="plan", version=7)
    assert state == {"goal": "ship", "steps": [], "tags": []}


def test_read_state_never_mutates_what_was_stored():
    stored = {"mode": "legacy", "message_count": 1, "gone": [1]}
    before = copy.deepcopy(stored)
    with pytest.warns(FlowStateWarning):
        schema.read_state(ModeState, stored, where="s", version=1)
    assert stored == before


def test_read_state_of_nothing_stored_gives_defaults_or_empty():
    assert schema.read_state(ModeState, None, where="s", version=0) == schema.defaults(ModeState)
    assert schema.read_state(None, None, where="s", version=0) == {}


def test_read_state_without_a_schema_returns_a_copy():
    stored = {"a": [1]}
    state = schema.read_state(None, stored, where="s", version=1)
    state["a"].append(2)
    assert stored == {"a": [1]}


def test_read_state_falls_back_to_defaults_when_a_model_validator_fails():
    with pytest.warns(FlowStateWarning, match="range v2: stored state no longer fits Range"):
        state = schema.read_state(Range, {"low": 5, "high": 1}, where="range", version=2)
    assert state == {"low": 0, "high": 0}


# ---------------------------------------------------------------------------- snapshot

def test_snapshot_is_a_read_only_instance_of_the_model():
    snap = schema.snapshot(ModeState, {"mode": "agent", "message_count": 2})
    assert isinstance(snap, ModeState)
    assert type(snap).__name__ == "ModeState"
    assert snap.mode == "agent"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        snap.mode = "chat"


def test_snapshot_equals_a_model_instance_with_the_same_data_both_ways():
    snap = schema.snapshot(ModeState, {"mode": "agent", "message_count": 2})
    assert snap == ModeState(mode="agent", message_count=2)
    assert ModeState(mode="agent", message_count=2) == snap
    assert snap != ModeState()
    assert repr(snap) == "ModeState(mode='agent', message_count=2)"


def test_snapshot_reuses_one_frozen_class_per_model():
    a = schema.snapshot(ModeState, schema.defaults(ModeState))
    b = schema.snapshot(ModeState, schema.defaults(ModeState))
    assert type(a) is type(b)
    assert hash(a) == hash(b)


def test_snapshot_nested_values_are_copies_of_the_data():
    data = {"goal": "", "steps": [{"title": "a", "done": False}], "tags": ["x"]}
    snap = schema.snapshot(PlanState, data)
    snap.tags.append("leak")
    assert data["tags"] == ["x"]


def test_snapshot_without_a_schema_is_a_read_only_mapping_of_a_copy():
    data = {"mode": "chat"}
    snap = schema.snapshot(None, data)
    assert isinstance(snap, types.MappingProxyType)
    assert snap["mode"] == "chat"
    with pytest.raises(TypeError):
        snap["mode"] = "agent"
    data["mode"] = "agent"
    assert snap["mode"] == "chat"


# ---------------------------------------------------------------------------- field_summary

def test_field_summary_shows_readable_types():
    class Mixed(BaseModel):
        mode: Literal["chat", "agent"] = "chat"
        count: int = 0
        tags: list[str] = Field(default_factory=list)
        note: str | None = None
        meta: dict[str, int] = Field(default_factory=dict)
        steps: list[Step] = Field(default_factory=list)

    assert schema.field_summary(Mixed) == {
        "mode": "Literal['chat', 'agent']", "count": "int", "tags": "list[str]",
        "note": "str | None", "meta": "dict[str, int]", "steps": "list[Step]",
    }
    assert schema.field_summary(None) == {}


def test_helpers_refuse_a_model_instance_passed_instead_of_the_class():
    with pytest.raises(SchemaError, match="is not a pydantic model"):
        schema.defaults(ModeState())
    with pytest.raises(SchemaError, match="is not a pydantic model"):
        schema.validate_state(ModeState(), {}, where="s")


# -- the plain-field shortcut: a write that only changes plain fields skips pydantic ----------

class Plain(BaseModel):
    count: int = 0
    ratio: float = 0.0
    name: str = ""
    flag: bool = False
    mode: Literal["chat", "agent"] = "chat"
    note: str | None = None
    items: list[int] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    anything: typing.Any = None


_json_values = st.recursive(  # finite: ops refuse NaN and infinity before any validation
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(Plain.model_fields)), value=_json_values)
def test_the_plain_field_shortcut_stores_what_pydantic_would(field, value):
    base = Plain().model_dump(mode="json")
    data = {**base, field: value}
    try:
        expected = schema.validate_state(Plain, data, where="s")
    except ValidationError:
        with pytest.raises(ValidationError):
            schema.validator(Plain)(data, "s", [field])
        return
    got = schema.validator(Plain)(data, "s", [field])
    assert got == expected
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@settings(max_examples=300, deadline=None)
@given(data=st.fixed_dictionaries({}, optional={
    "count": st.integers() | _json_values, "name": st.text() | _json_values,
    "mode": st.sampled_from(["chat", "agent"]) | _json_values,
    "items": st.lists(st.integers(), max_size=3) | _json_values,
    "tags": st.dictionaries(st.text(), st.text(), max_size=3) | _json_values,
    "anything": _json_values}))
def test_a_whole_new_state_through_the_shortcut_is_what_pydantic_would_store(data):
    try:
        expected = schema.validate_state(Plain, data, where="s")
    except ValidationError:
        with pytest.raises(ValidationError):
            schema.validator(Plain)(data, "s", schema.ALL_FIELDS)
        return
    got = schema.validator(Plain)(data, "s", schema.ALL_FIELDS)
    assert got == expected
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


class Tidy(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)
    name: str = ""


class Shouting(BaseModel):
    name: str = ""

    @pydantic.field_validator("name")
    @classmethod
    def upper(cls, value: str) -> str:
        return value.upper()


class NonNegative(BaseModel):
    count: int = Field(default=0, ge=0)


class Mean(BaseModel):
    mean: float = 0.0


@pytest.mark.parametrize("model, write, stored", [
    (Tidy, {"name": "  x "}, {"name": "x"}),
    (Shouting, {"name": "hi"}, {"name": "HI"}),
    (Mean, {"mean": 1}, {"mean": 1.0}),
])
def test_fields_pydantic_would_change_are_still_validated_by_pydantic(model, write, stored):
    handle = fs.ScopeHandle(fs.open_store("memory://"), "session", "s", state=model)
    handle.patch_state(write)
    assert handle.state_dict() == stored
    assert [type(v) for v in handle.state_dict().values()] == [type(v) for v in stored.values()]


def test_a_constrained_field_is_still_checked_when_incremented():
    handle = fs.ScopeHandle(fs.open_store("memory://"), "session", "s", state=NonNegative)
    with pytest.raises(ValidationError, match="count"):
        handle.inc_state(count=-1)
    assert (handle.state.count, handle.version) == (0, 0)


def test_a_model_validator_still_runs_when_one_plain_field_changes():
    handle = fs.ScopeHandle(fs.open_store("memory://"), "session", "s", state=Range)
    handle.patch_state(low=1, high=5)
    with pytest.raises(ValidationError):
        handle.patch_state(low=9)
    assert (handle.state.low, handle.version) == (1, 1)
