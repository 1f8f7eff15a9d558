"""A damaged SQLite store file gives a StoreError that says what to do, never a raw sqlite3 error,
and nothing is written (issue 13 §7)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.stores.sqlite import MIGRATIONS, SCHEMA_VERSION


class Counter(BaseModel):
    n: int = 0


def _store_with_data(path: Path) -> None:
    store = fs.open_store(f"sqlite:///{path}")
    handle = fs.ScopeHandle(store, "session", "s1", state=Counter)
    for _ in range(200):
        handle.inc_state(n=1)
    store.close()


def _raw(path: Path, sql: str, params: tuple = ()) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_the_schema_version_follows_the_list_of_migrations() -> None:
    assert len(MIGRATIONS) + 1 == SCHEMA_VERSION
    assert all(isinstance(step, tuple) and step for step in MIGRATIONS)


@pytest.mark.parametrize("value", ["abc", "", "4.5"])
def test_a_schema_version_that_is_not_a_number_is_refused_at_open(tmp_path: Path,
                                                                    value: str) -> None:
    path = tmp_path / "s.db"
    _store_with_data(path)
    _raw(path, "UPDATE fs_meta SET value = ? WHERE key = 'schema_version'", (value,))
    before = path.read_bytes()
    with pytest.raises(fs.StoreError, match=r"schema version .* not a number; restore"):
        fs.open_store(f"sqlite:///{path}")
    assert path.read_bytes() == before


@pytest.mark.parametrize("table", ["records", "history", "changes"])
def test_a_missing_table_is_refused_at_open_naming_it(tmp_path: Path, table: str) -> None:
    path = tmp_path / "s.db"
    _store_with_data(path)
    _raw(path, f"DROP TABLE {table}")
    with pytest.raises(fs.StoreError, match=rf"damaged flowstate store: table.*{table}"):
        fs.open_store(f"sqlite:///{path}")


def test_a_table_dropped_while_open_gives_a_store_error_on_read_and_write(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _store_with_data(path)
    store = fs.open_store(f"sqlite:///{path}")
    handle = fs.ScopeHandle(store, "session", "s1", state=Counter)
    _raw(path, "DROP TABLE history")
    with pytest.raises(fs.StoreError, match="damaged or was changed by another program"):
        handle.inc_state(n=1)
    assert handle.state.n == 200  # the write was rolled back whole
    _raw(path, "DROP TABLE records")
    with pytest.raises(fs.StoreError, match="flowstate doctor"):
        handle.state  # noqa: B018 - reading is the point
    store.close()


def test_damaged_pages_give_a_store_error_not_a_raw_database_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _store_with_data(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    assert pages > 3
    data = bytearray(path.read_bytes())
    for page in range(1, pages):  # every page but the header's: b-tree pages become garbage
        start = page * page_size
        data[start:start + page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))
    with pytest.raises(fs.StoreError) as caught:
        store = fs.open_store(f"sqlite:///{path}")
        fs.ScopeHandle(store, "session", "s1", state=Counter).inc_state(n=1)
    assert not isinstance(caught.value, sqlite3.Error)
    assert "restore" in str(caught.value)
