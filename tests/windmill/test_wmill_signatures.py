"""The module-level functions have the exact parameters of the real ``wmill`` client."""

from __future__ import annotations

import inspect

import pytest

import flowstate_jupyter.windmill as wm

wmill = pytest.importorskip("wmill", reason="the wmill client is a test dependency: "
                                            "pip install -e '.[test]'")

WMILL_FUNCTIONS = ["get_state", "set_state", "get_state_path", "get_resource", "set_resource",
                   "list_resources", "set_flow_user_state", "get_flow_user_state",
                   "get_variable", "set_variable"]


def _shape(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", WMILL_FUNCTIONS)
def test_function_takes_the_same_parameters_as_wmill(name):
    ours, theirs = getattr(wm, name), getattr(wmill, name)
    assert _shape(ours) == _shape(theirs), (
        f"{name}: ours {inspect.signature(ours)} vs wmill {inspect.signature(theirs)}")


@pytest.mark.parametrize("name", WMILL_FUNCTIONS)
def test_function_is_public_and_documented(name):
    assert name in wm.__all__
    assert (getattr(wm, name).__doc__ or "").strip()


def test_the_parameters_that_matter_are_where_wmill_puts_them():
    # A guard that fails loudly if wmill's shape ever changes under the pin.
    assert list(inspect.signature(wmill.set_resource).parameters) == \
        ["path", "value", "resource_type"]
    assert inspect.signature(wm.get_resource).parameters["interpolated"].default is True
    assert inspect.signature(wm.set_variable).parameters["is_secret"].default is False
