"""Pure JSON state operations: flowstate_jupyter.model.ops."""

from __future__ import annotations

import copy
import datetime
import decimal
import enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from flowstate_jupyter.errors import ValidationError
from flowstate_jupyter.model import ops

# ---------------------------------------------------------------------------- strategies

json_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=12,
)
states = st.dictionaries(st.sampled_from(["a", "b", "n", "tags", "meta"]), json_values,
                         max_size=5)
field_names = st.sampled_from(["a", "b", "n", "tags", "meta", "new"])


# ---------------------------------------------------------------------------- check_json

def test_check_json_accepts_every_plain_json_type():
    ops.check_json({"s": "x", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, [2, {"k": []}]]},
                   where="session")


def test_check_json_refuses_a_set_and_names_where_and_the_field_path():
    with pytest.raises(ValidationError) as info:
        ops.check_json({"tags": ["a", "b", {1, 2}]}, where="session")
    assert str(info.value) == ("session: field 'tags[2]' holds a set, which is not JSON; "
                               "use a list")
    assert info.value.path == ("tags", 2)
    assert info.value.where == "session"


@pytest.mark.parametrize("bad, word", [(float("nan"), "NaN"), (float("inf"), "infinity"),
                                       (float("-inf"), "infinity")])
def test_check_json_refuses_nan_and_infinity_and_names_the_path(bad, word):
    with pytest.raises(ValidationError) as info:
        ops.check_json({"stats": {"mean": bad}}, where="plan")
    message = str(info.value)
    assert message.startswith("plan: field 'stats.mean' holds " + word)
    assert "finite number" in message
    assert info.value.path == ("stats", "mean")


@pytest.mark.parametrize("bad, hint", [
    ((1, 2), "use a list"),
    (frozenset({1}), "use a list"),
    (datetime.datetime(2024, 1, 1), "isoformat()"),
    (datetime.date(2024, 1, 1), "isoformat()"),
    (datetime.timedelta(seconds=3), "total_seconds()"),
    (b"raw", "decode"),
    (decimal.Decimal("1.5"), "float(value)"),
    (object(), "convert it to dict, list, str, int, float, bool or None"),
])
def test_check_json_refuses_non_json_types_and_says_what_to_do(bad, hint):
    with pytest.raises(ValidationError) as info:
        ops.check_json({"x": [bad]}, where="session")
    assert "field 'x[0]'" in str(info.value)
    assert hint in str(info.value)


def test_check_json_refuses_a_pydantic_model_with_a_model_dump_hint():
    class Step(BaseModel):
        title: str = ""

    with pytest.raises(ValidationError, match=r"model_dump\(mode='json'\)"):
        ops.check_json({"step": Step()}, where="session")


def test_check_json_refuses_an_enum_member_and_suggests_its_value():
    class Color(str, enum.Enum):
        RED = "red"

    with pytest.raises(ValidationError, match=r"\.value"):
        ops.check_json({"c": Color.RED}, where="session")


def test_check_json_refuses_non_str_dict_keys():
    with pytest.raises(ValidationError) as info:
        ops.check_json({"meta": {3: "x"}}, where="session")
    assert "field 'meta' has key 3 (int)" in str(info.value)
    assert "must be str" in str(info.value)


def test_check_json_at_top_level_speaks_of_the_value_and_prefixes_the_given_path():
    with pytest.raises(ValidationError, match=r"^session: the value is a set"):
        ops.check_json({1}, where="session")
    with pytest.raises(ValidationError) as info:
        ops.check_json([{1}], where="session", path=("tags",))
    assert info.value.path == ("tags", 0)


def test_copy_json_turns_str_int_float_subclasses_into_plain_types():
    class Name(str):
        pass

    copied = ops.copy_json({"n": Name("x"), "l": [Name("y")]}, where="s")
    assert type(copied["n"]) is str and type(copied["l"][0]) is str


def test_format_path_renders_indexes_and_quotes_odd_keys():
    assert ops.format_path(("steps", 2, "title")) == "steps[2].title"
    assert ops.format_path(("meta", "my key")) == "meta['my key']"
    assert ops.format_path(()) == ""


# ---------------------------------------------------------------------------- json_equal

def test_json_equal_distinguishes_bool_from_numbers():
    assert not ops.json_equal(True, 1)
    assert not ops.json_equal(0, False)
    assert not ops.json_equal({"a": [1, True]}, {"a": [1, 1]})
    assert not ops.json_equal({"a": {"b": 1.0}}, {"a": {"b": True}})
    assert ops.json_equal({"a": [True]}, {"a": [True]})


def test_json_equal_treats_int_and_float_alike_and_ignores_key_order():
    assert ops.json_equal({"a": 1, "b": [2]}, {"b": [2.0], "a": 1.0})
    assert not ops.json_equal({"a": 1}, {"a": 1, "b": None})
    assert not ops.json_equal([1, 2], [2, 1])


def _tagged(value):
    """Reference form for equality: bools and numbers never meet."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", value)
    if isinstance(value, list):
        return ("list", tuple(_tagged(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((k, _tagged(v)) for k, v in value.items()))
    return ("other", value)


@settings(max_examples=300)
@given(json_values, json_values)
def test_json_equal_matches_a_bool_aware_reference(a, b):
    assert ops.json_equal(a, b) == (_tagged(a) == _tagged(b))
    assert ops.json_equal(a, copy.deepcopy(a))


# ---------------------------------------------------------------------------- patch / replace

def test_patch_merges_top_level_fields_only():
    state = {"mode": "chat", "meta": {"a": 1, "b": 2}}
    assert ops.patch(state, {"meta": {"a": 5}}, where="s") == {"mode": "chat",
                                                                "meta": {"a": 5}}


def test_patch_shares_unchanged_values_and_copies_the_callers_values():
    unchanged = {"big": list(range(5))}
    update = {"tags": ["a"]}
    new = ops.patch({"keep": unchanged}, update, where="s")
    assert new["keep"] is unchanged
    update["tags"].append("leak")
    assert new["tags"] == ["a"]


def test_patch_refuses_a_non_dict_update():
    with pytest.raises(ValidationError, match="must be a dict"):
        ops.patch({}, ["mode", "chat"], where="session")


def test_patch_refuses_non_json_values_naming_the_field():
    with pytest.raises(ValidationError, match=r"field 'when' holds a datetime"):
        ops.patch({}, {"when": datetime.datetime.now()}, where="session")


def test_replace_returns_a_copy_of_the_new_state():
    new = {"a": [1]}
    result = ops.replace({"old": 1}, new, where="s")
    assert result == {"a": [1]}
    new["a"].append(2)
    assert result == {"a": [1]}


def test_replace_refuses_a_non_dict():
    with pytest.raises(ValidationError, match="session: the new state must be a dict"):
        ops.replace({}, [1], where="session")


# ---------------------------------------------------------------------------- increment

def test_increment_treats_missing_field_as_zero():
    assert ops.increment({}, {"count": 3}, where="s") == {"count": 3}


def test_increment_keeps_int_for_int_plus_int_and_mixes_with_float():
    new = ops.increment({"a": 1, "b": 1}, {"a": 2, "b": 0.5}, where="s")
    assert new == {"a": 3, "b": 1.5}
    assert type(new["a"]) is int


def test_increment_refuses_a_bool_increment_naming_the_field():
    with pytest.raises(ValidationError) as info:
        ops.increment({"count": 1}, {"count": True}, where="session")
    assert "field 'count'" in str(info.value)
    assert info.value.path == ("count",)


def test_increment_refuses_a_field_that_holds_a_bool_or_str():
    with pytest.raises(ValidationError, match=r"field 'flag': it holds bool True"):
        ops.increment({"flag": True}, {"flag": 1}, where="session")
    with pytest.raises(ValidationError, match=r"field 'mode': it holds str 'chat'"):
        ops.increment({"mode": "chat"}, {"mode": 1}, where="session")


def test_increment_refuses_nan_and_overflow_to_infinity():
    with pytest.raises(ValidationError, match="NaN"):
        ops.increment({}, {"x": float("nan")}, where="s")
    with pytest.raises(ValidationError, match="overflows"):
        ops.increment({"x": 1e308}, {"x": 1e308}, where="s")


# ---------------------------------------------------------------------------- push

def test_push_appends_and_creates_a_missing_list():
    assert ops.push({"tags": ["a"]}, "tags", "b", where="s") == {"tags": ["a", "b"]}
    assert ops.push({}, "tags", {"k": 1}, where="s") == {"tags": [{"k": 1}]}


def test_push_refuses_a_non_list_field_naming_it():
    with pytest.raises(ValidationError, match=r"session: cannot push to field 'tags': it holds "
                                              r"None, not a list"):
        ops.push({"tags": None}, "tags", "x", where="session")


def test_push_names_the_new_index_when_the_value_is_not_json():
    with pytest.raises(ValidationError) as info:
        ops.push({"tags": ["a", "b"]}, "tags", {1}, where="session")
    assert "field 'tags[2]' holds a set" in str(info.value)


# ---------------------------------------------------------------------------- records

def test_set_record_sets_one_key_and_creates_a_missing_dict():
    assert ops.set_record({"m": {"a": 1}}, "m", "b", 2, where="s") == {"m": {"a": 1, "b": 2}}
    assert ops.set_record({}, "m", "a", [1], where="s") == {"m": {"a": [1]}}


def test_set_record_refuses_non_str_key_and_non_dict_field():
    with pytest.raises(ValidationError, match="record keys of field 'm' must be str"):
        ops.set_record({}, "m", 1, "x", where="s")
    with pytest.raises(ValidationError, match=r"field 'm': it holds list \[1\], not a dict"):
        ops.set_record({"m": [1]}, "m", "k", "x", where="s")


def test_delete_record_removes_one_key():
    assert ops.delete_record({"m": {"a": 1, "b": 2}}, "m", "a", where="s") == {"m": {"b": 2}}


def test_delete_record_of_a_missing_key_or_field_returns_an_equal_new_dict():
    state = {"m": {"a": 1}}
    for field, key in [("m", "zz"), ("nope", "a")]:
        new = ops.delete_record(state, field, key, where="s")
        assert new == state and new is not state


def test_delete_record_refuses_a_non_dict_field():
    with pytest.raises(ValidationError, match="not a dict"):
        ops.delete_record({"m": "x"}, "m", "a", where="s")


def test_operations_are_named_as_in_the_design():
    assert ops.OPERATIONS == ("patch", "set", "increment", "push", "set_record",
                              "delete_record", "atomic")


# ---------------------------------------------------------------------------- never mutate

operations = st.one_of(
    st.tuples(st.just("patch"), st.dictionaries(field_names, json_values, max_size=3)),
    st.tuples(st.just("replace"), st.dictionaries(field_names, json_values, max_size=3)),
    st.tuples(st.just("increment"),
              st.dictionaries(field_names, st.integers(-5, 5) | st.floats(-5, 5), max_size=3)),
    st.tuples(st.just("push"), st.tuples(field_names, json_values)),
    st.tuples(st.just("set_record"), st.tuples(field_names, st.text(max_size=3), json_values)),
    st.tuples(st.just("delete_record"), st.tuples(field_names, st.text(max_size=3))),
)


def _apply(state, name, args):
    if name in ("patch", "replace", "increment"):
        return getattr(ops, name)(state, args, where="s")
    return getattr(ops, name)(state, *args, where="s")


@settings(max_examples=300)
@given(states, operations)
def test_operations_never_mutate_their_inputs(state, operation):
    name, args = operation
    state_before, args_before = copy.deepcopy(state), copy.deepcopy(args)
    try:
        new = _apply(state, name, args)
    except ValidationError:
        new = None  # refused (e.g. push onto a str): inputs must still be untouched
    assert ops.json_equal(state, state_before)
    assert ops.json_equal(args, args_before)
    if new is not None:
        assert new is not state
        ops.check_json(new, where="s")


@given(states, st.dictionaries(field_names, st.lists(st.integers(), max_size=3), max_size=3))
def test_patch_result_does_not_change_when_the_caller_later_mutates_the_update(state, update):
    new = ops.patch(state, update, where="s")
    expected = copy.deepcopy(new)
    for value in update.values():
        value.append(99)
    assert ops.json_equal(new, expected)
