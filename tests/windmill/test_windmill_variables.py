"""Variables: plain-text values by path; secrets refused (the store is not encrypted)."""

from __future__ import annotations

import pytest

import flowstate_jupyter.windmill as wm
from flowstate_jupyter.base import names
from flowstate_jupyter.errors import AccessDeniedError, ResourceNotFoundError, ValidationError


def test_a_variable_round_trips_with_either_prefix(wm_store):
    wm.set_variable("f/conf/region", "eu-west-1")
    assert wm.get_variable("f/conf/region") == "eu-west-1"
    assert wm.get_variable("var://f/conf/region") == "eu-west-1"
    assert wm.get_variable("$var:f/conf/region") == "eu-west-1"
    wm.set_variable("var://f/conf/region", "us-east-1")
    assert wm.get_variable("f/conf/region") == "us-east-1"


def test_a_missing_variable_raises_and_names_the_environment_fallback(wm_store):
    with pytest.raises(ResourceNotFoundError) as err:
        wm.get_variable("u/alice/api_key")
    assert "FLOWSTATE_VAR_U_ALICE_API_KEY" in str(err.value)


def test_the_environment_fills_in_what_the_store_does_not_hold(wm_store, wm_env):
    wm_env.setenv("FLOWSTATE_VAR_U_ALICE_API_KEY", "from-env")
    assert wm.get_variable("u/alice/api_key") == "from-env"
    wm.set_variable("u/alice/api_key", "stored")
    assert wm.get_variable("u/alice/api_key") == "stored"
    assert wm.variable_env_name("f/my-team/db.url") == "FLOWSTATE_VAR_F_MY_TEAM_DB_URL"


def test_a_secret_variable_is_refused_with_advice_to_use_the_environment(wm_store):
    with pytest.raises(ValidationError) as err:
        wm.set_variable("u/alice/token", "s3cret", is_secret=True)
    message = str(err.value)
    assert "not encrypted" in message and "environment variable" in message
    assert "FLOWSTATE_VAR_U_ALICE_TOKEN" in message
    assert wm_store.read("project", "default", names.WM_VARIABLE_PREFIX + "u/alice/token") is None
    assert wm_store.changes() == []


def test_a_variable_value_must_be_a_string(wm_store):
    with pytest.raises(ValidationError, match="string"):
        wm.set_variable("f/conf/n", 5)  # type: ignore[arg-type]


def test_another_users_variable_cannot_be_written(wm_store, wm_env):
    wm.set_variable("u/alice/v", "a")
    wm_env.setenv("FLOWSTATE_USER", "bob")
    with pytest.raises(AccessDeniedError, match="'bob'"):
        wm.set_variable("u/alice/v", "b")
    assert wm.get_variable("u/alice/v") == "a"
