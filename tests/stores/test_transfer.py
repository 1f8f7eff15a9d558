"""Export/import, history pruning and the health report, on every backend."""

from __future__ import annotations

import io
import json

import pytest
from _helpers import fingerprint

import flowstate_jupyter as fs
from flowstate_jupyter.stores.transfer import (
    check_line,
    export_store,
    import_store,
    records_equal,
)


def _fill(store) -> None:
    session = fs.ScopeHandle(store, "session", "s1", resources={
        "plan": fs.define_resource(writable=True)})
    for _ in range(5):
        session.inc_state(count=1)
    session.resources.plan.patch_state(goal="ship")
    session.resources.plan.write_content("# plan")
    session.resources.plan.delete()  # a tombstone travels too
    fs.ScopeHandle(store, "user", "alice").patch_state(theme="dark", tags=["a", "%_"])


def _export(store) -> list[str]:
    out = io.StringIO()
    export_store(store, out)
    return out.getvalue().splitlines()


def test_an_export_imported_into_an_empty_store_compares_equal_record_by_record(backend,
                                                                                  tmp_path):
    source = backend.open()
    _fill(source)
    target = fs.open_store(f"sqlite:///{tmp_path}/copy.db")
    assert import_store(target, _export(source)) == 3
    assert records_equal(source, target) == []
    assert target.read("session", "s1").version == 5
    assert target.read("session", "s1", "plan").deleted
    assert [h.version for h in target.history("session", "s1")] == [5, 4, 3, 2, 1]
    handle = fs.ScopeHandle(target, "session", "s1")
    assert handle.inc_state(count=1) and handle.version == 6  # versions go on, never reused


@pytest.mark.postgres
def test_sqlite_to_postgresql_and_back_is_lossless(pg_backend, tmp_path):
    sqlite = fs.open_store(f"sqlite:///{tmp_path}/a.db")
    _fill(sqlite)
    postgres = pg_backend.open()
    import_store(postgres, _export(sqlite))
    assert records_equal(sqlite, postgres) == []
    back = fs.open_store(f"sqlite:///{tmp_path}/b.db")
    import_store(back, _export(postgres))
    assert records_equal(sqlite, back) == []


def test_an_import_over_existing_records_is_refused_before_anything_is_written(backend,
                                                                                tmp_path):
    source = backend.open()
    _fill(source)
    lines = _export(source)
    target = fs.open_store(f"sqlite:///{tmp_path}/t.db")
    fs.ScopeHandle(target, "user", "alice").patch_state(theme="light")
    with pytest.raises(fs.ResourceAlreadyExistsError, match="already exists"):
        import_store(target, lines)
    assert [r.scope for r in target.list(include_deleted=True)] == ["user"]
    assert target.read("user", "alice").state == {"theme": "light"}
    import_store(target, lines, replace=True)
    assert records_equal(source, target) == []


@pytest.mark.parametrize("first_line", ["", "not json", '{"format": "other"}',
                                        '{"format": "flowstate-export", "version": 99}'])
def test_a_file_that_is_not_an_export_is_refused(store, first_line):
    with pytest.raises(fs.ValidationError):
        import_store(store, [first_line, "{}"])
    assert store.list(include_deleted=True) == []


def test_prune_history_keeps_the_newest_versions_of_every_record(store):
    _fill(store)
    removed = store.prune_history(2)
    assert removed == 3 + 1  # session s1: 5 versions, its plan: 3, user alice: 1
    assert [h.version for h in store.history("session", "s1")] == [5, 4]
    assert len(store.history("session", "s1", "plan")) == 2
    assert store.read("session", "s1").version == 5  # the record itself is untouched


def test_doctor_reports_a_healthy_store_with_counts(store):
    _fill(store)
    report = store.doctor()
    assert report["problems"] == []
    assert report["records"] == 3
    assert report["history_rows"] == 5 + 3 + 1


# ---------------------------------------------------------------------------- all or nothing

def _line(**changes) -> str:
    """One valid record line of an export, with ``changes`` applied (None removes a field)."""
    line = {"scope": "session", "scope_id": "s9", "name": "", "version": 2,
            "state": {"count": 2}, "content": None, "deleted": False, "created_at": 1.0,
            "updated_at": 2.0, "accessed_at": 2.0,
            "history": [{"version": 1, "ts": 1.0, "operation": "patch", "state": {"count": 1},
                         "deleted": False, "request_id": None},
                        {"version": 2, "ts": 2.0, "operation": "increment",
                         "state": {"count": 2}, "deleted": False, "request_id": "r-1"}]}
    for key, value in changes.items():
        if value is None:
            line.pop(key)
        else:
            line[key] = value
    return json.dumps(line)


HEADER = json.dumps({"format": "flowstate-export", "version": 1})
ONE_HISTORY = [{"version": 1, "ts": 1.0, "operation": "set", "state": {}}]

BAD_RECORDS = [
    # (what, the record line, words the message must hold)
    ("version text", _line(version="abc"), ["version", "'abc'"]),
    ("version negative", _line(version=-5), ["version", "-5"]),
    ("version zero", _line(version=0), ["version"]),
    ("version past int64", _line(version=2**80), ["version", "9223372036854775807"]),
    ("version float", _line(version=2.5), ["version"]),
    ("version bool", _line(version=True), ["version"]),
    ("scope unknown", _line(scope="evil"), ["'evil'", "scopes"]),
    ("id traversal", _line(scope_id="../../etc"), ["'../../etc'"]),
    ("id empty", _line(scope_id=""), ["session id"]),
    ("id not text", _line(scope_id=5), ["session id"]),
    ("name traversal", _line(name="../../etc"), ["'../../etc'"]),
    ("name unknown reserved", _line(name="$evil"), ["'$evil'", "reserved"]),
    ("name key traversal", _line(name="files:a/../b"), ["'..'"]),
    ("name control character", _line(name="plan\n"), ["plan"]),
    ("deleted text", _line(deleted="yes"), ["deleted", "'yes'"]),
    ("content number", _line(content=5), ["content", "int"]),
    ("time text", _line(created_at="yesterday"), ["created_at"]),
    ("time negative", _line(updated_at=-1), ["updated_at"]),
    ("time infinite", '{"scope": "session", "scope_id": "s9", "name": "", "version": 1, '
                      '"state": {}, "updated_at": 1e400}', ["updated_at", "infinity"]),
    ("state NaN", '{"scope": "session", "scope_id": "s9", "name": "", "version": 1, '
                  '"state": NaN}', ["NaN"]),
    ("state surrogate", '{"scope": "session", "scope_id": "s9", "name": "", "version": 1, '
                        '"state": {"a": "\\ud800"}}', ["surrogate"]),
    ("missing field", _line(state=None), ["'state'", "missing"]),
    ("unknown field", _line(owner="mallory"), ["'owner'"]),
    ("not an object", "[1, 2]", ["list"]),
    ("not JSON", "{oops", ["not JSON"]),
    ("history newer than record", _line(version=1, history=[
        *ONE_HISTORY, {"version": 2, "ts": 1.0, "operation": "set", "state": {}}]),
     ["history[1]", "version"]),
    ("history twice", _line(history=ONE_HISTORY * 2), ["history[1]", "twice"]),
    ("history time", _line(history=[{**ONE_HISTORY[0], "ts": "x"}]), ["history[0]", "ts"]),
    ("history deleted", _line(history=[{**ONE_HISTORY[0], "deleted": 1}]), ["deleted"]),
    ("history operation", _line(history=[{**ONE_HISTORY[0], "operation": 7}]), ["operation"]),
    ("history not a list", _line(history={"version": 1}), ["history", "dict"]),
    ("history request id", _line(history=[{**ONE_HISTORY[0], "request_id": 5}]),
     ["request_id"]),
]


@pytest.mark.parametrize("what,bad,words", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_an_invalid_record_refuses_the_whole_file_naming_its_line(store, what, bad, words):
    fs.ScopeHandle(store, "user", "alice").patch_state(theme="dark")
    before = fingerprint(store)
    lines = [HEADER, _line(scope_id="first"), _line(scope_id="second"), bad,
             _line(scope_id="last")]
    with pytest.raises(fs.ValidationError) as info:
        import_store(store, lines)
    message = str(info.value)
    assert message.startswith("line 4 of the export"), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert fingerprint(store) == before


def test_a_record_twice_in_one_file_is_refused(store):
    with pytest.raises(fs.ValidationError, match=r"line 3 .* also on line 2"):
        import_store(store, [HEADER, _line(), _line()])
    assert store.list(include_deleted=True) == []


def test_a_state_over_the_target_limit_is_refused(backend):
    store = backend.open(max_state_bytes=100)
    with pytest.raises(fs.ValidationError, match="over the target store's limit"):
        import_store(store, [HEADER, _line(state={"text": "x" * 200})])
    assert store.list(include_deleted=True) == []


def test_valid_records_of_every_kind_import(store):
    lines = [HEADER, _line(), _line(name="plan", content="# text"),
             _line(name="files:docs/a.md", deleted=True), _line(name="$meta"),
             _line(scope="project", scope_id="default", name="$wm/state/u/alice/job"),
             _line(scope="request", scope_id="r-1", name="$sequencer:seq#1", history=[])]
    assert import_store(store, lines) == 6
    assert store.read("session", "s9", "files:docs/a.md").deleted
    assert [h.version for h in store.history("session", "s9")] == [2, 1]


def test_restore_many_is_one_transaction_on_every_backend(backend):
    """A refusal half-way (the second record exists) writes nothing, not even the first."""
    store = backend.open()
    fs.ScopeHandle(store, "user", "alice").patch_state(theme="dark")
    before = fingerprint(store)
    first = check_line(_line(scope_id="new"), 2)
    taken = check_line(_line(scope="user", scope_id="alice"), 3)
    with pytest.raises(fs.ResourceAlreadyExistsError):
        store.restore_many([first, taken])
    assert fingerprint(store) == before
    assert store.restore_many([first, taken], replace=True) == 2
    assert store.read("user", "alice").state == {"count": 2}


def test_a_file_that_is_not_utf8_is_refused(store, tmp_path):
    path = tmp_path / "binary.jsonl"
    path.write_bytes(HEADER.encode() + b"\n" + b"\xff\xfe\x00garbage\n")
    with open(path, encoding="utf-8") as fh, pytest.raises(fs.ValidationError, match="UTF-8"):
        import_store(store, fh)
    assert store.list(include_deleted=True) == []
