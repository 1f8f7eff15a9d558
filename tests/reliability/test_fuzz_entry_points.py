"""Hostile input at every public entry point (issue 13 §7): only library errors reach the user.

Hypothesis drives scope handles, resources, collections, the Windmill functions, the
``flowstate`` command and imports (the magics: ``tests/notebook/test_fuzz_magics.py``) with
hostile values: lone surrogates, huge integers, NaN and infinities, 10,000-deep nesting, strings
over the size limit, control characters, wrong types and path traversal in ids, keys and paths.
Each call either succeeds or raises a ``FlowStateError`` (the command: a documented exit code
with a one-line message and no traceback), and after every refusal the store's records,
versions, history and change log are exactly as before. The examples are derandomized so a run
is repeatable; how every kind of call ended is printed at the end (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _fuzz import (
    FUZZ,
    HOSTILE_KEYS,
    HOSTILE_TEXT,
    HOSTILE_VALUES,
    OVERSIZE,
    RESOURCES,
    SMALL_LOGS,
    TALLY,
    Typed,
    _nest,
    attempt,
    ids,
    json_like,
    keys,
    report,
    text,
    values,
)
from _helpers import fingerprint
from hypothesis import given
from hypothesis import strategies as st

import flowstate_jupyter as fs
import flowstate_jupyter.windmill as wm


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    report()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/fuzz.db"
    s = fs.open_store(url, **SMALL_LOGS)
    typed = fs.ScopeHandle(s, "session", "s1", state=Typed, resources=RESOURCES)
    typed.patch_state(count=1, tags=["a"], notes={"k": 1})  # something to keep unchanged
    typed.resources.plan.patch_state(name="p")
    typed.resources.files.create("files/a.md")
    yield s
    s.close()


def _scope(store: Any, typed: bool) -> Any:
    if typed:
        return fs.ScopeHandle(store, "session", "s1", state=Typed, resources=RESOURCES)
    return fs.ScopeHandle(store, "session", "free")  # free-form JSON, a record of its own


# -- scope handles -------------------------------------------------------------------------------

STATE_OPS: dict[str, Callable[[Any, Any, Any, Any], Any]] = {
    "patch_state": lambda h, k, v, _: h.patch_state({k: v}),
    "patch_state kw": lambda h, k, v, _: h.patch_state(data=v),
    "set_state": lambda h, k, v, _: h.set_state(v),
    "set_state dict": lambda h, k, v, _: h.set_state({k: v}),
    "inc_state": lambda h, k, v, _: h.inc_state({k: v}),
    "inc_state ratio": lambda h, k, v, _: h.inc_state(ratio=v),
    "push_state": lambda h, k, v, _: h.push_state(k, v),
    "set_state_record": lambda h, k, v, k2: h.set_state_record(k, k2, v),
    "delete_state_record": lambda h, k, v, k2: h.delete_state_record(k, k2),
    "atomic_state": lambda h, k, v, _: h.atomic_state(lambda s: {k: v}),
}


@FUZZ
@given(op=st.sampled_from(sorted(STATE_OPS)), typed=st.booleans(), key=keys, value=values,
       key2=keys)
def test_scope_state_operations(store, op, typed, key, value, key2):
    handle = _scope(store, typed)
    attempt(f"scope {op}", store, lambda: STATE_OPS[op](handle, key, value, key2))


def test_every_hostile_value_and_key_at_every_state_operation(store):
    for typed in (True, False):
        handle = _scope(store, typed)
        for op, call in STATE_OPS.items():
            for value in HOSTILE_VALUES:
                attempt(f"scope {op}", store, lambda: call(handle, "data", value, "k"))
            for key in HOSTILE_KEYS:
                attempt(f"scope {op}", store, lambda: call(handle, key, 1, key))


@FUZZ
@given(scope=st.one_of(st.sampled_from(["session", "user", "request", "project"]), text),
       scope_id=ids, value=values)
def test_scope_ids(store, scope, scope_id, value):
    def call() -> None:
        fs.ScopeHandle(store, scope, scope_id).patch_state(data=value)

    attempt("scope ids", store, call)


# -- resources and collections -------------------------------------------------------------------

RESOURCE_OPS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "plan.patch_state": lambda r, k, v: r.plan.patch_state({k: v}),
    "plan.set_state": lambda r, k, v: r.plan.set_state(v),
    "plan.update_state": lambda r, k, v: r.plan.update_state(lambda s: v),
    "plan.inc_state": lambda r, k, v: r.plan.inc_state({k: v}),
    "plan.push_state": lambda r, k, v: r.plan.push_state(k, v),
    "plan.write_content": lambda r, k, v: r.plan.write_content(v),
    "plan.write_content text": lambda r, k, v: r.plan.write_content(k),
    "free.set_state": lambda r, k, v: r.free.set_state({k: v}),
    "ro.patch_state": lambda r, k, v: r.ro.patch_state({k: v}),
    "by name": lambda r, k, v: r[k],
}
COLLECTION_OPS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "create": lambda c, k, v: c.create(k, v),
    "create replace": lambda c, k, v: c.create(k, {"data": v}, replace=True),
    "get": lambda c, k, v: c.get(k),
    "get_optional": lambda c, k, v: c.get_optional(k),
    "get_or_create": lambda c, k, v: c.get_or_create(k, v),
    "upsert": lambda c, k, v: c.upsert(k, {"data": v}),
    "list": lambda c, k, v: c.list(k),
    "delete": lambda c, k, v: c.delete(k),
    "instance write": lambda c, k, v: c.instance(k).patch_state(data=v),
}
COLLECTION_KEYS = ["files/a.md", "files/b/c.md", "files/../x", "files//x", "files/\ud800",
                   "files/\x00", "files/" + "a/" * 200, "notes/1", "notes/../1", "notes/a/b",
                   "files/a\\b", "notes/\udfff", "files/" + "x" * 5000]
collection_keys = st.one_of(st.sampled_from(["files/a.md", "files/b/c.md", "notes/1"]), keys,
                            st.sampled_from(COLLECTION_KEYS))


@FUZZ
@given(op=st.sampled_from(sorted(RESOURCE_OPS)), key=keys, value=values)
def test_resources(store, op, key, value):
    resources = _scope(store, True).resources
    attempt(f"resource {op}", store, lambda: RESOURCE_OPS[op](resources, key, value))


def test_every_hostile_value_and_key_at_every_resource_and_collection_operation(store):
    resources = _scope(store, True).resources
    for op, call in RESOURCE_OPS.items():
        for value in HOSTILE_VALUES:
            attempt(f"resource {op}", store, lambda: call(resources, "data", value))
        for key in HOSTILE_KEYS:
            attempt(f"resource {op}", store, lambda: call(resources, key, 1))
    for name in ("files", "capped"):
        collection = resources[name]
        for op, call in COLLECTION_OPS.items():
            for value in HOSTILE_VALUES:
                attempt(f"collection {op}", store, lambda: call(collection, "files/a.md",
                                                                value))
            for key in [*HOSTILE_KEYS, *COLLECTION_KEYS]:
                attempt(f"collection {op}", store, lambda: call(collection, key, {"count": 1}))


@FUZZ
@given(name=st.sampled_from(["files", "capped"]), op=st.sampled_from(sorted(COLLECTION_OPS)),
       key=collection_keys, value=values)
def test_collections(store, name, op, key, value):
    collection = _scope(store, True).resources[name]
    attempt(f"collection {op}", store, lambda: COLLECTION_OPS[op](collection, key, value))


# -- Windmill ------------------------------------------------------------------------------------

valid_paths = st.sampled_from(["u/alice/x", "f/team/x", "f/team/a/b", "u/alice/deep/path"])
paths = st.one_of(valid_paths, valid_paths, text, st.sampled_from(
    ["u/alice/x", "f/team/x", "u/bob/x", "u/alice/../bob/x", "f/team/\ud800", "f/team/a b",
     "$res:f/team/x", "res://u/alice/x", "f/t/" + "a" * 300, "u/alice/", "f//x"]),
    st.sampled_from([None, 5, b"u/alice/x"]))
schemas = st.one_of(
    st.sampled_from([{"type": "object"}, {"pattern": "^(a+)+$"}, {"pattern": r"(a)\1"},
                     {"$ref": "http://127.0.0.1:9/x.json"}, {"$ref": "#/$defs/nope"},
                     {"type": "strin"}, {"properties": {"a": {"maximum": 10**400}}},
                     {"multipleOf": 0.1}, {"patternProperties": {"\ud800": {}}},
                     {"format": "regex"}, True, False, [], "schema"]),
    json_like)

WINDMILL_OPS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "set_state": lambda p, v, _: wm.set_state(v, p),
    "get_state": lambda p, v, _: wm.get_state(p),
    "update_state": lambda p, v, _: wm.update_state(lambda old: v, p),
    "delete_state": lambda p, v, _: wm.delete_state(p),
    "set_resource any": lambda p, v, _: wm.set_resource(p, v),
    "set_resource typed": lambda p, v, _: wm.set_resource(p, v, "fuzzed"),
    "set_resource type name": lambda p, v, t: wm.set_resource("f/team/r", v, t),
    "get_resource": lambda p, v, _: wm.get_resource(p),
    "delete_resource": lambda p, v, _: wm.delete_resource(p),
    "list_resources": lambda p, v, t: wm.list_resources(t, v, v),
    "set_variable": lambda p, v, _: wm.set_variable(p, v),
    "get_variable": lambda p, v, _: wm.get_variable(p),
    "create_resource_type": lambda p, v, s: wm.create_resource_type("fuzzed", s,
                                                                  replace=True),
    "state_path": lambda p, v, t: wm.state_path(username=t, script_path=p),
}


@pytest.fixture
def windmill(store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("WM_STATE_PATH_NEW", "WM_STATE_PATH", "FLOWSTATE_SCHEDULE",
                 "FLOWSTATE_SCRIPT_PATH", "FLOWSTATE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWSTATE_USER", "alice")
    with wm.use_store(store):
        wm.create_resource_type("fuzzed", {"type": "object", "properties": {
            "n": {"type": "integer", "maximum": 5}, "s": {"pattern": "^(a+)+$"}}})
        yield store


WINDMILL_PATHS = ["u/alice/x", "f/team/x", "u/bob/x", "u/alice/../bob/x", "f/team/\ud800",
                  "f/team/a b", "$res:f/team/x", "res://u/alice/x", "f/t/" + "a" * 300,
                  "u/alice/", "f//x", "f/team/\x00", *HOSTILE_TEXT, None, 5, b"u/alice/x"]
SCHEMAS = [{"type": "object"}, {"pattern": "^(a+)+$"}, {"pattern": r"(a)\1"},
           {"$ref": "http://127.0.0.1:9/x.json"}, {"$ref": "#/$defs/nope"}, {"type": "strin"},
           {"properties": {"a": {"maximum": 10**400}}}, {"multipleOf": 0.1},
           {"patternProperties": {"\ud800": {}}}, {"format": "regex"}, True, False, [],
           "schema", {"$ref": "file:///etc/passwd"}, {"$defs": {"a": _nest(300)}}]


def test_every_hostile_value_path_and_schema_at_every_windmill_function(windmill):
    for op, call in WINDMILL_OPS.items():
        for value in HOSTILE_VALUES:
            attempt(f"windmill {op}", windmill, lambda: call("f/team/x", value, "fuzzed"))
        for path in WINDMILL_PATHS:
            attempt(f"windmill {op}", windmill, lambda: call(path, {"n": 1}, "alice"))
        for extra in [*SCHEMAS, *HOSTILE_TEXT]:
            attempt(f"windmill {op}", windmill, lambda: call("f/team/x", {"n": 1}, extra))


@FUZZ
@given(op=st.sampled_from(sorted(WINDMILL_OPS)), path=paths, value=values,
       extra=st.one_of(text, schemas))
def test_windmill_functions(windmill, op, path, value, extra):
    attempt(f"windmill {op}", windmill, lambda: WINDMILL_OPS[op](path, value, extra))


# -- the flowstate command -----------------------------------------------------------------------

CLI_ARGS = st.one_of(
    st.tuples(st.sampled_from(["show", "history", "ls"]),
              st.one_of(st.sampled_from(["session/s1", "session/\ud800", "session/../../x",
                                         "evil/x", "session", "user/" + "a" * 500, "/", ""]),
                        text)),
    st.tuples(st.just("show"), st.just("session/s1"), st.just("--resource"), text),
    st.tuples(st.just("history"), st.just("session/s1"), st.just("--limit"),
              st.sampled_from(["0", "-5", "1e400", "nan", "99999999999999999999999", "x"])),
    st.tuples(st.just("prune"), st.just("--keep"),
              st.sampled_from(["0", "-1", "2", "99999999999999999999", "nan"])),
    st.tuples(st.just("--store"), st.sampled_from(
        ["memory://?timeout=nan", "sqlite:///x.db?history_limit=-1", "bogus://x",
         "sqlite:///x.db?max_state_bytes=abc", "sqlite:///\ud800.db", "postgresql://",
         "memory://?foo=1"]), st.just("ls")),
    st.tuples(st.sampled_from(["frob", "--nope", "import", "export"])),
)


@FUZZ
@given(args=CLI_ARGS)
def test_cli(store, tmp_path, args):
    from flowstate_jupyter.cli import main

    if store.url == "memory://":
        return  # the command opens its own store: only a file is shared
    argv = list(args) if args[0] == "--store" else ["--store", store.url, *args]
    before = fingerprint(store)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage mistakes
            code = exc.code
    message = err.getvalue()
    assert code in (0, 1, 2, 3, 4), (argv, code, message)
    if code:
        assert message.count("\n") == 1 and message.startswith("flowstate: "), (argv, message)
        assert "Traceback" not in message
    assert fingerprint(store) == before  # none of these commands writes
    TALLY["flowstate " + str(args[0])][f"exit {code}"] += 1


# -- import --------------------------------------------------------------------------------------

GOOD_LINE = {"scope": "session", "scope_id": "imported", "name": "", "version": 2,
             "state": {"count": 2}, "content": None, "deleted": False, "created_at": 1.0,
             "updated_at": 2.0, "accessed_at": 2.0,
             "history": [{"version": 2, "ts": 2.0, "operation": "set", "state": {}}]}
FIELDS = [*GOOD_LINE, "history.version", "history.ts", "history.state", "extra"]


def test_every_hostile_value_in_every_field_of_an_import(store):
    from flowstate_jupyter.stores.transfer import import_store

    header = json.dumps({"format": "flowstate-export", "version": 1})
    for field in FIELDS:
        for value in HOSTILE_VALUES:
            line = json.loads(json.dumps(GOOD_LINE))
            if field.startswith("history."):
                line["history"][0][field.split(".")[1]] = value
            else:
                line[field] = value
            try:
                text = json.dumps(line, allow_nan=True)
            except (TypeError, ValueError, RecursionError):
                continue  # not JSON at all: an export line cannot hold it
            attempt(f"import {field}", store, lambda: import_store(store, [header, text]))


@FUZZ
@given(field=st.sampled_from(FIELDS), value=st.one_of(json_like, st.sampled_from(
    [10**400, 2**63, -1, 0, "../../etc", "$evil", "\ud800", _nest(5000), OVERSIZE])),
    raw=st.sampled_from(["", "\ud800", "[" * 10_000, "NaN", '{"scope": 1e400}', "\x00"]))
def test_import(store, field, value, raw):
    from flowstate_jupyter.stores.transfer import import_store

    line = json.loads(json.dumps(GOOD_LINE))
    if field.startswith("history."):
        line["history"][0][field.split(".")[1]] = value
    else:
        line[field] = value
    try:
        text = json.dumps(line, allow_nan=True)
    except (ValueError, RecursionError):
        text = raw
    header = json.dumps({"format": "flowstate-export", "version": 1})
    attempt(f"import {field}", store, lambda: import_store(store, [header, text, raw]))
