"""Resources typed by JSON Schema: validated on write, refused whole, per-user write access."""

from __future__ import annotations

import pytest

import flowstate_jupyter.windmill as wm
from flowstate_jupyter.base import names
from flowstate_jupyter.errors import (
    AccessDeniedError,
    InvalidIdError,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
    ValidationError,
)

PG_SCHEMA = {
    "type": "object",
    "properties": {
        "host": {"type": "string"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "replicas": {"type": "array", "items": {
            "type": "object", "properties": {"port": {"type": "integer"}}}},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["host", "port"],
}
DB = "u/alice/db"


def _record(store, path):
    return store.read("project", "default", names.WM_RESOURCE_PREFIX + path)


@pytest.fixture
def pg_type(wm_store):
    wm.create_resource_type("postgresql", PG_SCHEMA, "A PostgreSQL server")
    return wm_store


# ---------------------------------------------------------------- resource types

def test_any_and_state_always_exist(wm_store):
    assert [t["name"] for t in wm.list_resource_types()] == ["any", "state"]
    assert wm.get_resource_type("any")["schema"] == {}
    with pytest.raises(ResourceAlreadyExistsError, match="built in"):
        wm.create_resource_type("state", {"type": "object"})


def test_a_resource_type_is_kept_with_its_schema_and_description(pg_type):
    assert wm.get_resource_type("postgresql") == {
        "name": "postgresql", "schema": PG_SCHEMA, "description": "A PostgreSQL server"}
    assert [t["name"] for t in wm.list_resource_types()] == ["any", "state", "postgresql"]


@pytest.mark.parametrize("schema,where", [
    ({"type": "strin"}, "type"),
    ({"properties": {"port": {"type": 5}}}, "properties/port/type"),
    ({"required": "host"}, "required"),
    ([1, 2], None),
])
def test_an_invalid_json_schema_is_refused_and_nothing_is_stored(wm_store, schema, where):
    with pytest.raises(ValidationError) as err:
        wm.create_resource_type("broken", schema)
    if where is not None:
        assert "not a valid JSON Schema" in str(err.value) and where in str(err.value)
    assert wm_store.read("project", "default", names.WM_RESOURCE_TYPE_PREFIX + "broken") is None
    assert wm_store.changes() == []


def test_a_schema_is_checked_against_the_draft_it_declares(wm_store):
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"n": {"type": "integer"}}, "dependencies": {"n": ["m"]}}
    wm.create_resource_type("legacy", draft7)
    wm.set_resource("f/x/ok", {"n": 1, "m": 2}, "legacy")
    with pytest.raises(ValidationError, match=r"'m' is a dependency of 'n'"):
        wm.set_resource("f/x/bad", {"n": 1}, "legacy")
    with pytest.raises(ValidationError, match="Draft7Validator"):
        wm.create_resource_type("legacy2", {**draft7, "type": "strin"})


def test_creating_a_type_again_is_idempotent_but_a_change_needs_replace(pg_type):
    wm.create_resource_type("postgresql", PG_SCHEMA, "A PostgreSQL server")
    other = {"type": "object"}
    with pytest.raises(ResourceAlreadyExistsError, match="replace=True"):
        wm.create_resource_type("postgresql", other)
    wm.create_resource_type("postgresql", other, replace=True)
    assert wm.get_resource_type("postgresql")["schema"] == other


def test_type_names_are_checked(wm_store):
    for name in ("", "has-dash", "1st", "a b"):
        with pytest.raises(InvalidIdError):
            wm.create_resource_type(name, {})
    with pytest.raises(ResourceNotFoundError, match="create_resource_type"):
        wm.get_resource_type("nope")


# ---------------------------------------------------------------- writing resources

def test_a_valid_resource_is_stored_and_read_back(pg_type):
    value = {"host": "db.local", "port": 5432}
    wm.set_resource(DB, value, "postgresql")
    assert wm.get_resource(DB) == value
    assert wm.get_resource(f"$res:{DB}") == value
    assert wm.get_resource(f"res://{DB}") == value
    assert _record(pg_type, DB).state == {"resource_type": "postgresql", "value": value}


@pytest.mark.parametrize("value,json_path", [
    ({"host": "db", "port": "5432"}, "$.port"),
    ({"host": "db", "port": 70000}, "$.port"),
    ({"host": "db", "port": 1, "replicas": [{"port": 2}, {"port": "x"}]}, "$.replicas[1].port"),
    ({"host": "db", "port": 1, "email": "not-an-email"}, "$.email"),
    ({"port": 1}, "$:"),
    (["not", "an", "object"], "$:"),
])
def test_a_schema_invalid_resource_is_refused_with_nothing_stored(pg_type, value, json_path):
    log_before = pg_type.changes()
    with pytest.raises(ValidationError) as err:
        wm.set_resource(DB, value, "postgresql")
    message = str(err.value)
    assert json_path in message and "'postgresql'" in message and DB in message
    assert "nothing was stored" in message
    assert _record(pg_type, DB) is None
    assert pg_type.changes() == log_before


def test_the_error_carries_the_field_path(pg_type):
    with pytest.raises(ValidationError) as err:
        wm.set_resource(DB, {"host": "db", "port": "x"}, "postgresql")
    assert err.value.path == ("port",)
    assert "is not of type 'integer'" in err.value.reason


def test_an_invalid_update_leaves_the_stored_resource_as_it_was(pg_type):
    wm.set_resource(DB, {"host": "db", "port": 1}, "postgresql")
    with pytest.raises(ValidationError):
        wm.set_resource(DB, {"host": "db", "port": -1})
    record = _record(pg_type, DB)
    assert (record.version, record.state["value"]) == (1, {"host": "db", "port": 1})


def test_a_resource_keeps_its_type_and_any_means_keep_it(pg_type):
    wm.set_resource(DB, {"host": "db", "port": 1}, "postgresql")
    wm.set_resource(DB, {"host": "db2", "port": 2})  # resource_type defaults to "any"
    assert _record(pg_type, DB).state["resource_type"] == "postgresql"
    with pytest.raises(ValidationError, match="of type 'postgresql', not 'mysql'"):
        wm.set_resource(DB, {"host": "db", "port": 1}, "mysql")


def test_an_unknown_type_is_refused(wm_store):
    with pytest.raises(ValidationError, match="create_resource_type"):
        wm.set_resource("f/x/y", {}, "nope")
    assert _record(wm_store, "f/x/y") is None


def test_setting_an_equal_value_writes_nothing(pg_type):
    wm.set_resource(DB, {"host": "db", "port": 1}, "postgresql")
    wm.set_resource(DB, {"host": "db", "port": 1}, "postgresql")
    assert _record(pg_type, DB).version == 1


def test_an_any_resource_takes_any_json(wm_store):
    for value in ({"a": 1}, [1], "text", 3, None):
        wm.set_resource("f/misc/thing", value)
        assert wm.get_resource("f/misc/thing") == value


# ---------------------------------------------------------------- reading resources

def test_a_missing_resource_raises_or_reads_as_none(wm_store):
    with pytest.raises(ResourceNotFoundError, match="set_resource"):
        wm.get_resource("f/x/missing")
    assert wm.get_resource("f/x/missing", none_if_undefined=True) is None


def test_references_are_resolved_when_interpolated(wm_store, wm_env):
    wm.set_variable("f/creds/pw", "hunter2")
    wm.set_resource("f/creds/host", {"name": "db.local"})
    wm.set_resource("f/app/db", {"password": "$var:f/creds/pw",
                                 "host": "$res:f/creds/host",
                                 "list": ["$var:f/creds/pw", {"deep": "$res:f/creds/host"}],
                                 "plain": "$not-a-reference"})
    assert wm.get_resource("f/app/db") == {
        "password": "hunter2", "host": {"name": "db.local"},
        "list": ["hunter2", {"deep": {"name": "db.local"}}], "plain": "$not-a-reference"}
    raw = wm.get_resource("f/app/db", interpolated=False)
    assert raw["password"] == "$var:f/creds/pw" and raw["host"] == "$res:f/creds/host"


def test_a_secret_reference_resolves_from_the_environment(wm_store, wm_env):
    wm.set_resource("f/app/api", {"token": "$var:f/creds/token"})
    with pytest.raises(ResourceNotFoundError, match=r"FLOWSTATE_VAR_F_CREDS_TOKEN"):
        wm.get_resource("f/app/api")
    wm_env.setenv("FLOWSTATE_VAR_F_CREDS_TOKEN", "s3cret")
    assert wm.get_resource("f/app/api") == {"token": "s3cret"}


def test_broken_references_raise_naming_where_they_are(wm_store):
    wm.set_resource("f/app/a", {"nested": {"other": "$res:f/app/missing"}})
    with pytest.raises(ResourceNotFoundError, match=r"\$\.nested\.other"):
        wm.get_resource("f/app/a", none_if_undefined=True)
    wm.set_resource("f/app/b", {"c": "$res:f/app/c"})
    wm.set_resource("f/app/c", {"b": "$res:f/app/b"})
    with pytest.raises(ValidationError, match="cycle: f/app/b -> f/app/c -> f/app/b"):
        wm.get_resource("f/app/b")


def test_states_and_resources_share_one_namespace(wm_store):
    wm.set_state({"cursor": 3}, "u/alice/watch/user")
    assert wm.get_resource("u/alice/watch/user") == {"cursor": 3}
    wm.set_resource("u/alice/watch/user", {"cursor": 4})  # "any" on a state updates the state
    assert wm.get_state("u/alice/watch/user") == {"cursor": 4}
    wm.set_resource("u/alice/other/user", [1], "state")
    assert wm.get_state("u/alice/other/user") == [1]
    wm.set_resource("f/x/conf", {"a": 1})
    with pytest.raises(ValidationError, match="holds a resource of type 'any'"):
        wm.set_state(1, "f/x/conf")
    assert wm.get_state("f/x/conf") == {"a": 1}
    wm.create_resource_type("conf", {"type": "object"})
    with pytest.raises(ValidationError, match="holds a state"):
        wm.set_resource("u/alice/watch/user", {}, "conf")


def test_list_resources_filters_by_type_and_paginates(pg_type):
    wm.set_resource("f/a/db1", {"host": "h", "port": 1}, "postgresql")
    wm.set_resource("f/a/db2", {"host": "h", "port": 2}, "postgresql")
    wm.set_resource("f/a/misc", {"x": 1})
    wm.set_state([1], "u/alice/s/user")
    everything = wm.list_resources()
    assert [(r["path"], r["resource_type"]) for r in everything] == [
        ("f/a/db1", "postgresql"), ("f/a/db2", "postgresql"), ("f/a/misc", "any"),
        ("u/alice/s/user", "state")]
    assert everything[0]["value"] == {"host": "h", "port": 1}
    assert [r["path"] for r in wm.list_resources("postgresql")] == ["f/a/db1", "f/a/db2"]
    assert [r["path"] for r in wm.list_resources("state")] == ["u/alice/s/user"]
    assert [r["path"] for r in wm.list_resources("any,state")] == ["f/a/misc", "u/alice/s/user"]
    assert [r["path"] for r in wm.list_resources(page=2, per_page=3)] == ["u/alice/s/user"]
    assert [r["path"] for r in wm.list_resources(page=1)] == [r["path"] for r in everything]
    with pytest.raises(ValidationError, match="page"):
        wm.list_resources(page=0)


def test_delete_resource(wm_store):
    wm.set_resource("f/a/x", 1)
    assert wm.delete_resource("f/a/x") is True
    assert wm.get_resource("f/a/x", none_if_undefined=True) is None
    assert wm.delete_resource("f/a/x") is False


# ---------------------------------------------------------------- access

def test_another_users_resource_cannot_be_written(pg_type, wm_env):
    wm.set_resource(DB, {"host": "db", "port": 1}, "postgresql")
    log_before = pg_type.changes()
    wm_env.setenv("FLOWSTATE_USER", "bob")
    with pytest.raises(AccessDeniedError) as err:
        wm.set_resource(DB, {"host": "evil", "port": 1})
    assert "'bob'" in str(err.value) and DB in str(err.value) and "u/bob/" in str(err.value)
    with pytest.raises(AccessDeniedError):
        wm.delete_resource(DB)
    with pytest.raises(AccessDeniedError):
        wm.set_resource("u/carol/new", {}, "any")
    assert pg_type.changes() == log_before
    assert wm.get_resource(DB) == {"host": "db", "port": 1}  # reading is allowed
    wm.set_resource("u/bob/db", {"host": "mine", "port": 1}, "postgresql")
    wm.set_resource("f/shared/db", {"host": "team", "port": 1}, "postgresql")
    wm_env.setenv("FLOWSTATE_USER", "alice")
    wm.set_resource("f/shared/db", {"host": "team2", "port": 1})  # folders are shared
    assert wm.get_resource("f/shared/db")["host"] == "team2"


@pytest.mark.parametrize("path", ["db", "u/alice", "g/group/x", "u/alice//db", "f/a/../b",
                                  "f/a/b c", "$res:f/a"])
def test_resource_paths_are_validated(wm_store, path):
    with pytest.raises(InvalidIdError):
        wm.set_resource(path, {})
    with pytest.raises(InvalidIdError):
        wm.get_resource(path)
