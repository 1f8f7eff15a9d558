"""Export/import, history pruning and the health report, on every backend."""

from __future__ import annotations

import io

import pytest

import flowstate_jupyter as fs
from flowstate_jupyter.stores.transfer import export_store, import_store, records_equal


def _fill(store) -> None:
    session = fs.ScopeHandle(store, "session", "s1", resources={
        "plan": fs.define_resource(writable=True)})
    for i in range(5):
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
