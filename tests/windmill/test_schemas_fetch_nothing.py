"""JSON Schemas fetch nothing and cannot hang a writer (docs/decisions.md, 'JSON Schemas fetch
nothing and run in linear time').

A ``$ref`` resolves only inside its schema: references to the network, to files or to anything
else are refused when the type is created, and a type stored by an older version (written here
straight into the store) is refused at write time without fetching. Regular expressions run on
RE2: a catastrophic-backtracking pattern answers at once, and patterns RE2 cannot run are refused
when the type is created. Every refusal leaves the store as it was.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from _helpers import fingerprint, run_python

import flowstate_jupyter.windmill as wm
from flowstate_jupyter.base import names
from flowstate_jupyter.errors import InvalidIdError, ValidationError


class _Counter(http.server.BaseHTTPRequestHandler):
    """Serves a schema to anyone who asks, and counts who asked."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # the name http.server calls
        type(self).hits.append(self.path)
        body = b'{"type": "string", "description": "SECRET-FROM-THE-NETWORK"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """A schema server on the loopback address; yields its URL and the paths requested."""
    _Counter.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Counter.hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def _store_type_as_an_old_version_would(store, name: str, schema: dict) -> None:
    store.write("project", "default", names.WM_RESOURCE_TYPE_PREFIX + name,
                {"schema": schema, "description": ""})


# ---------------------------------------------------------------------------- references

def test_a_network_ref_is_refused_when_the_type_is_created_and_nothing_is_fetched(
        wm_store, server):
    url, hits = server
    before = fingerprint(wm_store)
    for schema in ({"$ref": f"{url}/a.json"},
                   {"properties": {"host": {"$ref": f"{url}/b.json#/defs/x"}}},
                   {"$defs": {"x": {"$dynamicRef": f"{url}/c.json"}}},
                   {"allOf": [{"$ref": f"{url}/d.json"}]}):
        with pytest.raises(ValidationError, match="does not point inside the schema"):
            wm.create_resource_type("remote", schema)
    assert hits == []
    assert fingerprint(wm_store) == before


def test_a_file_ref_is_refused_and_the_file_is_never_read(wm_store, tmp_path, monkeypatch):
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "string", "description": "SECRET-FROM-THE-DISK"}')
    monkeypatch.chdir(tmp_path)
    before = fingerprint(wm_store)
    for ref in (secret.as_uri(), "secret.json", "./secret.json", "/etc/passwd"):
        with pytest.raises(ValidationError) as info:
            wm.create_resource_type("local", {"properties": {"a": {"$ref": ref}}})
        assert "properties/a" in str(info.value) and "SECRET" not in str(info.value)
    assert fingerprint(wm_store) == before


def test_an_unresolvable_ref_is_refused_at_create_time_with_a_clear_error(wm_store):
    before = fingerprint(wm_store)
    with pytest.raises(ValidationError) as info:
        wm.create_resource_type("dangling", {"properties": {"port": {"$ref": "#/$defs/nope"}}})
    message = str(info.value)
    assert "'#/$defs/nope'" in message and "properties/port" in message and "$defs" in message
    assert fingerprint(wm_store) == before


def test_refs_inside_the_schema_resolve_pointers_anchors_ids_and_recursion(wm_store):
    tree = {
        "$defs": {
            "port": {"type": "integer", "minimum": 1},
            "named": {"$anchor": "named", "type": "string", "minLength": 1},
            "embedded": {"$id": "urn:flowstate:test:host", "type": "string"},
            "node": {"type": "object", "properties": {
                "name": {"$ref": "#named"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}},
        },
        "type": "object",
        "properties": {"port": {"$ref": "#/$defs/port"},
                       "host": {"$ref": "urn:flowstate:test:host"},
                       "root": {"$ref": "#/$defs/node"}},
    }
    wm.create_resource_type("tree", tree)
    good = {"port": 5, "host": "h", "root": {"name": "a", "children": [{"name": "b"}]}}
    wm.set_resource("f/t/good", good, "tree")
    assert wm.get_resource("f/t/good") == good
    with pytest.raises(ValidationError, match=r"\$\.root\.children\[0\]\.name"):
        wm.set_resource("f/t/bad", {"root": {"name": "a", "children": [{"name": ""}]}}, "tree")
    with pytest.raises(ValidationError, match=r"\$\.port"):
        wm.set_resource("f/t/bad", {"port": 0}, "tree")


def test_a_type_stored_with_an_outside_ref_is_refused_at_write_without_fetching(
        wm_store, server):
    url, hits = server
    _store_type_as_an_old_version_would(wm_store, "legacy", {"$ref": f"{url}/legacy.json"})
    before = fingerprint(wm_store)
    with pytest.raises(ValidationError) as info:
        wm.set_resource("f/x/legacy", "value", "legacy")
    message = str(info.value)
    assert "replace=True" in message and "nothing was stored" in message
    assert "SECRET" not in message
    assert hits == []
    assert fingerprint(wm_store) == before


# ---------------------------------------------------------------------------- regular expressions

HOSTILE_TYPES = {
    "pattern": ({"type": "object", "properties": {"a": {"type": "string",
                                                        "pattern": "^(a+)+$"}}},
                {"a": "a" * 40 + "!"}),
    "patternProperties": ({"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}},
                           "additionalProperties": False},
                          {"a" * 40 + "!": 1}),
    "propertyNames": ({"type": "object", "propertyNames": {"pattern": "^(a|aa)+$"}},
                      {"a" * 40 + "!": 1}),
    "nested quantifier": ({"type": "string", "pattern": "(x+x+)+y"}, "x" * 40),
}


def test_catastrophic_patterns_answer_at_once_in_a_writer_process(tmp_path):
    """Python's re needs longer than the age of the universe for these (2**40 steps); RE2 is
    linear. Run in a child process with a generous limit so that a regression fails instead of
    hanging the suite."""
    code = f"""
import os, sys
os.environ["FLOWSTATE_USER"] = "alice"
import flowstate_jupyter as fs, flowstate_jupyter.windmill as wm
from flowstate_jupyter.errors import ValidationError
cases = {HOSTILE_TYPES!r}
store = fs.open_store("sqlite:///{tmp_path}/wm.db")
with wm.use_store(store):
    for i, (name, (schema, value)) in enumerate(cases.items()):
        wm.create_resource_type(f"t{{i}}", schema)
        try:
            wm.set_resource(f"f/x/r{{i}}", value, f"t{{i}}")
        except ValidationError as exc:
            print(name, "refused:", str(exc)[:60])
        else:
            sys.exit(f"{{name}}: accepted")
"""
    out = run_python(code, timeout=120).stdout
    assert out.count("refused:") == len(HOSTILE_TYPES), out


@pytest.mark.parametrize("schema,words", [
    ({"type": "string", "pattern": r"^(a)\1$"}, ["pattern", "'^(a)\\\\1$'", "(the top)"]),
    ({"properties": {"a": {"pattern": "(?=x)y"}}}, ["pattern", "properties/a", "look-around"]),
    ({"patternProperties": {"(?<!x)y": {}}}, ["patternProperties", "'(?<!x)y'"]),
    ({"type": "string", "pattern": "(a{1000}){1000}"}, ["pattern", "repetition"]),
    ({"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False},
     ["unevaluatedProperties", "additionalProperties"]),
])
def test_patterns_re2_cannot_run_are_refused_at_create_time(wm_store, schema, words):
    before = fingerprint(wm_store)
    with pytest.raises(ValidationError) as info:
        wm.create_resource_type("nonlinear", schema)
    message = str(info.value)
    assert "'nonlinear'" in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert fingerprint(wm_store) == before


def test_patterns_follow_re2_syntax_and_search_semantics(wm_store):
    wm.create_resource_type("letters", {"type": "string", "pattern": r"^\p{L}+$"})
    wm.set_resource("f/x/word", "héllo", "letters")
    with pytest.raises(ValidationError, match="does not match"):
        wm.set_resource("f/x/word2", "h3llo", "letters")
    wm.create_resource_type("contains", {"type": "string", "pattern": "b"})
    wm.set_resource("f/x/c", "abc", "contains")  # JSON Schema patterns are not anchored


def test_pattern_properties_and_additional_properties_still_work_together(wm_store):
    wm.create_resource_type("env", {"type": "object",
                                    "properties": {"name": {"type": "string"}},
                                    "patternProperties": {"^X_": {"type": "integer"}},
                                    "additionalProperties": False})
    wm.set_resource("f/x/env", {"name": "n", "X_ONE": 1}, "env")
    with pytest.raises(ValidationError, match=r"\$\.X_TWO"):
        wm.set_resource("f/x/env", {"X_TWO": "two"}, "env")
    with pytest.raises(ValidationError, match="additional properties are not allowed"):
        wm.set_resource("f/x/env", {"OTHER": 1}, "env")
    assert wm.get_resource("f/x/env") == {"name": "n", "X_ONE": 1}


def test_format_regex_accepts_what_re2_runs(wm_store):
    wm.create_resource_type("rx", {"type": "string", "format": "regex"})
    wm.set_resource("f/x/rx", r"^\p{L}+$", "rx")
    with pytest.raises(ValidationError, match="is not a 'regex'"):
        wm.set_resource("f/x/rx", r"(a)\1", "rx")
    assert wm.get_resource("f/x/rx") == r"^\p{L}+$"


# ---------------------------------------------------------------------------- the write path

def test_every_refused_set_resource_leaves_the_store_as_it_was(wm_store):
    wm.create_resource_type("port", {"type": "object", "properties": {
        "port": {"type": "integer", "maximum": 65535}}, "additionalProperties": False})
    wm.set_resource("f/x/db", {"port": 1}, "port")
    before = fingerprint(wm_store)
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    refusals = [
        (("f/x/db", {"port": 70000}), ValidationError),
        (("f/x/db", {"port": 1, "extra": 1}), ValidationError),
        (("f/x/db", {"port": 1}, "other"), ValidationError),
        (("f/x/new", {"port": "\ud800"}, "port"), ValidationError),
        (("f/x/new", {"\udfff": 1}), ValidationError),
        (("f/x/new", {"port": float("nan")}), ValidationError),
        (("f/x/new", deep), ValidationError),
        (("f/x/new", {"port": 10**400}, "port"), ValidationError),
        (("f/x/\ud800", 1), InvalidIdError),
        (("f/../etc/passwd", 1), InvalidIdError),
        (("u/bob/db", 1), PermissionError),
        (("f/x/new", 1, "bad-name"), InvalidIdError),
        (("f/x/new", 1, 5), InvalidIdError),
        (("f/x/new", 1, "nope"), ValidationError),
    ]
    for args, error in refusals:
        with pytest.raises(error):
            wm.set_resource(*args)
        assert fingerprint(wm_store) == before, args
