"""SQLite store files are the owner's alone (issue 13 §8).

Files the store creates (database, WAL, shared memory) are 0600 and every folder it creates on
the way is 0700, whatever the umask; a file that was there already and that other users can read
stays as it is, but opening it warns (``FlowStateWarning``) with the ``chmod`` that fixes it, and
``doctor`` reports it.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import pytest

from flowstate_jupyter.errors import FlowStateWarning
from flowstate_jupyter.stores import open_store
from flowstate_jupyter.stores.sqlite import SQLiteStore


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def no_flowstate_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    assert [w for w in caught if issubclass(w.category, FlowStateWarning)] == []
    return result


def test_a_new_store_its_wal_and_shm_are_0600_and_every_folder_it_creates_0700(tmp_path,
                                                                             umask_022):
    tmp_path.chmod(0o755)
    path = tmp_path / "a" / "b" / "c" / "flowstate.db"
    store = no_flowstate_warnings(lambda: open_store(f"sqlite:///{path}"))
    try:
        store.write("session", "s1", "", {"secret": True})
        for name in (path, f"{path}-wal", f"{path}-shm"):
            assert mode(name) == 0o600, name
        for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
            assert mode(folder) == 0o700, folder
        assert mode(tmp_path) == 0o755, "a folder that was there is left alone"
        assert store.doctor()["problems"] == []
    finally:
        store.close()


def test_the_default_store_folder_is_created_owner_only(tmp_path, umask_022, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOWSTATE_STORE", raising=False)
    with open_store() as store:
        store.write("session", "s1", "", {})
    assert mode(tmp_path / ".flowstate") == 0o700
    assert mode(tmp_path / ".flowstate" / "flowstate.db") == 0o600


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604])
def test_a_store_file_others_can_read_warns_at_open_with_the_chmod_that_fixes_it(tmp_path,
                                                                                file_mode):
    path = tmp_path / "shared.db"
    with SQLiteStore(path) as store:
        store.write("session", "s1", "", {"n": 1})
    path.chmod(file_mode)
    with pytest.warns(FlowStateWarning) as caught:
        store = SQLiteStore(path)
    try:
        message = str(caught[0].message)
        assert f"{path} (mode {oct(file_mode)[2:]})" in message
        assert f"chmod 600 {path}" in message and "other users" in message
        assert store.read("session", "s1").state == {"n": 1}, "it still opens and works"
        assert mode(f"{path}-wal") == file_mode, "SQLite gives the WAL the file's mode"
        problems = store.doctor()["problems"]
        assert any(str(path) in p and "chmod 600" in p for p in problems), problems
    finally:
        store.close()
    os.chmod(path, 0o600)
    with no_flowstate_warnings(lambda: SQLiteStore(path)) as store:  # fixed: no warning
        assert store.doctor()["problems"] == []


def test_a_wal_others_can_read_is_named_in_the_warning_too(tmp_path):
    path = tmp_path / "store.db"
    holder = SQLiteStore(path)  # keeps the WAL and shared memory in place
    try:
        holder.write("session", "s1", "", {"n": 1})
        os.chmod(f"{path}-wal", 0o644)
        with pytest.warns(FlowStateWarning, match=r"chmod 600 \S+-wal") as caught:
            SQLiteStore(path).close()
        assert f"{path} (mode" not in str(caught[0].message), "the database file is fine"
    finally:
        holder.close()


def test_an_empty_file_others_can_read_warns_too(tmp_path):
    path = tmp_path / "empty.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    with pytest.warns(FlowStateWarning, match="chmod 600"):
        SQLiteStore(path).close()
