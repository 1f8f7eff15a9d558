"""A write that returned True is in the SQLite file for every process that opens it afterwards.

POSIX drops every fcntl lock a process holds on a file as soon as the process closes *any*
descriptor of it. The store once read the file's header with ``open()``/``close()``, so a second
store object in a process (``%state sessions``, a ``windmill`` call beside ``%load_ext``) silently
released the locks of the first; the next process to close its store then believed it was the
last one, deleted ``-wal`` and ``-shm``, and everything the first process wrote afterwards went
into a deleted file: acknowledged, then lost (issue 13 §1). These tests open the file the way
that broke it, check that nothing in the package touches the file outside SQLite, and check that
``doctor`` sees a process stranded on a deleted WAL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _helpers import python_env, run_python
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.stores.sqlite import SQLiteStore


class S(BaseModel):
    n: int = 0


INC = """
import sys
import flowstate_jupyter as fs
from pydantic import BaseModel
class S(BaseModel):
    n: int = 0
st = fs.open_store(sys.argv[1])
assert fs.ScopeHandle(st, "session", sys.argv[2], state=S).inc_state(n=int(sys.argv[3]))
st.close()
"""

READ_ALL = """
import json, sys
import flowstate_jupyter as fs
with fs.open_store(sys.argv[1]) as st:
    print(json.dumps({r.scope_id: r.state.get("n") for r in st.list("session")}))
"""


def fresh_read(url: str) -> dict:
    """What a new process sees: scope id -> n, for every session."""
    return json.loads(run_python(READ_ALL, url).stdout.strip().splitlines()[-1])


def test_a_write_acknowledged_after_a_second_store_object_opened_the_file_is_not_lost(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    a = fs.open_store(url)
    try:
        fs.ScopeHandle(a, "session", "s1", state=S).inc_state(n=1)
        second = fs.open_store(url)  # a second store object, same process (kept open)
        with fs.open_store(url):  # and a third, opened and closed (what %state sessions does)
            pass
        run_python(INC, url, "s1", "10")  # another process opens, writes and closes
        h = fs.ScopeHandle(a, "session", "s1", state=S)
        assert h.inc_state(n=100) is True
        assert fresh_read(url) == {"s1": 111}, "the acknowledged write reached the file"
        assert fs.ScopeHandle(second, "session", "s1", state=S).state.n == 111
        second.close()
        run_python(INC, url, "s1", "1000")
        assert h.inc_state(n=10_000) is True
    finally:
        a.close()
    assert fresh_read(url) == {"s1": 11_111}


# Records every open() / os.open() of the store's files (Python's audit hook sees both; SQLite's
# own opens, in C, are not Python calls), while doing everything a process does with a store.
AUDIT = r"""
import io, json, os, sys
db = os.path.realpath(sys.argv[1])
watched = {db, db + "-wal", db + "-shm"}
opened = []

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path in watched:
            opened.append([path, args[1], args[2]])

sys.addaudithook(hook)

import flowstate_jupyter as fs
from flowstate_jupyter import cli
from flowstate_jupyter.errors import FlowStateError
from flowstate_jupyter.stores.transfer import export_store, import_store
from pydantic import BaseModel

class S(BaseModel):
    n: int = 0

url = f"sqlite:///{sys.argv[1]}"
first = fs.open_store(url)                              # creates the file
fs.ScopeHandle(first, "session", "s1", state=S).inc_state(n=1)
first.subscribe(lambda event: None)                     # a watcher thread with its connection
for options in ({}, {"history_limit": 5}, {"durability": "full"}):
    with fs.open_store(url, **options) as other:        # more store objects, opened and closed
        fs.ScopeHandle(other, "session", "s1", state=S).inc_state(n=1)
        other.list(); other.history("session", "s1"); other.changes()
        other.doctor(); other.prune_history(3)
buffer = io.StringIO()
export_store(first, buffer)
with fs.open_store(f"sqlite:///{sys.argv[2]}") as copy:
    import_store(copy, io.StringIO(buffer.getvalue()))
for argv in (["doctor"], ["ls", "session"], ["export", sys.argv[1]], ["import", sys.argv[1]],
             ["export", sys.argv[1] + "-wal"]):
    code = cli.main(["--store", url, *argv])
    assert code in (0, 3), (argv, code)                # exports onto the store are refused
first.close()
print(json.dumps(opened))
"""


def test_nothing_in_the_package_opens_the_store_file_outside_sqlite(tmp_path):
    db = tmp_path / "audited.db"
    result = subprocess.run([sys.executable, "-c", AUDIT, str(db), str(tmp_path / "copy.db")],
                            env=python_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    opened = json.loads(result.stdout.strip().splitlines()[-1])
    # The one descriptor: the new, empty file created owner-only with O_EXCL, before any
    # connection to it exists.
    assert len(opened) == 1, opened
    path, _mode, flags = opened[0]
    assert path == str(db.resolve()) and flags & os.O_EXCL and flags & os.O_CREAT, opened
    assert "is the store's own file" in result.stderr  # the refused CLI export / import


HOLDER = r"""
import json, sys, threading, time
import flowstate_jupyter as fs
from flowstate_jupyter.errors import StoreError
from pydantic import BaseModel

class S(BaseModel):
    n: int = 0

url, seconds = sys.argv[1], float(sys.argv[2])
stores = [fs.open_store(url) for _ in range(3)]
acked = {"holder-0": 0, "holder-1": 0, "holder-2": 0, "holder-shared": 0}
errors = []
lock = threading.Lock()
deadline = time.monotonic() + seconds

def write(i):
    own = fs.ScopeHandle(stores[i], "session", f"holder-{i}", state=S)
    shared = fs.ScopeHandle(stores[i], "session", "holder-shared", state=S)
    while time.monotonic() < deadline:
        for key, handle in ((f"holder-{i}", own), ("holder-shared", shared)):
            try:
                if handle.inc_state(n=1):
                    with lock:
                        acked[key] += 1
            except StoreError as exc:  # not acknowledged (and, on SQLite, rolled back)
                errors.append(str(exc))

reopened = 0
def reopen():  # what %state sessions or a windmill call does: another store object, then close
    global reopened
    while time.monotonic() < deadline:
        with fs.open_store(url) as extra:
            extra.list("session")
        reopened += 1
        time.sleep(0.02)

threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
threads.append(threading.Thread(target=reopen))
print("started", flush=True)
for t in threads:
    t.start()
for t in threads:
    t.join()
for store in stores:
    store.close()
print(json.dumps({"acked": acked, "errors": errors[:5], "reopened": reopened}))
"""

CHURNER = r"""
import json, sys, time
import flowstate_jupyter as fs
from flowstate_jupyter.errors import StoreError
from pydantic import BaseModel

class S(BaseModel):
    n: int = 0

url, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
acked = errors = rounds = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    store = fs.open_store(url)          # open, write, close: the close is what deleted the WAL
    try:
        if fs.ScopeHandle(store, "session", name, state=S).inc_state(n=1):
            acked += 1
    except StoreError:
        errors += 1
    finally:
        store.close()
    rounds += 1
print(json.dumps({"acked": acked, "errors": errors, "rounds": rounds}))
"""


def test_torture_several_store_objects_write_while_other_processes_open_write_and_close(
        tmp_path):
    url = f"sqlite:///{tmp_path / 'torture.db'}"
    seconds = 8.0
    fs.open_store(url).close()  # the file exists before anyone races to create it
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(seconds)],
                              env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "started", holder.stderr.read()
    churners = [subprocess.Popen([sys.executable, "-c", CHURNER, url, f"churn-{i}",
                                  str(seconds)], env=python_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for i in range(2)]
    outcomes = {}
    for name, proc in [("holder", holder)] + [(f"churn-{i}", p) for i, p in
                                               enumerate(churners)]:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes[name] = json.loads(out.strip().splitlines()[-1])
    acked = dict(outcomes["holder"]["acked"])
    for i in range(2):
        acked[f"churn-{i}"] = outcomes[f"churn-{i}"]["acked"]
    found = fresh_read(url)
    print(f"torture: acknowledged {acked}, found {found}, holder reopened "
          f"{outcomes['holder']['reopened']} store objects, churners "
          f"{[outcomes[f'churn-{i}']['rounds'] for i in range(2)]} rounds, "
          f"errors {outcomes['holder']['errors']} "
          f"{[outcomes[f'churn-{i}']['errors'] for i in range(2)]}")
    assert found == acked, "every write that returned True is in the file, and no other"
    assert all(count > 0 for count in acked.values())
    assert outcomes["holder"]["reopened"] > 10
    assert all(outcomes[f"churn-{i}"]["rounds"] > 10 for i in range(2))


# -- doctor: a process stranded on a deleted WAL --------------------------------------------------

def _split_this_process_from(db: Path) -> None:
    """Put this process in the state the old bug left it in: its locks gone, its WAL deleted.

    Opening and closing a descriptor of the file outside SQLite drops this process's locks;
    another process that then opens, writes and closes the store believes it is the last one
    and deletes the WAL and the shared memory.
    """
    os.close(os.open(db, os.O_RDONLY))
    run_python(INC, f"sqlite:///{db}", "other", "1")


def test_doctor_reports_this_process_writing_to_a_deleted_wal(tmp_path):
    db = tmp_path / "split.db"
    store = SQLiteStore(db)
    try:
        store.write("session", "s1", "", {"n": 1})
        healthy = store.doctor()
        assert healthy["processes_on_deleted_files"] == [] and healthy["problems"] == []
        _split_this_process_from(db)
        store.write("session", "s1", "", {"n": 2})  # into the deleted WAL
        report = store.doctor()
        assert {"pid": os.getpid(), "file": f"{db}-wal"} in [
            {k: p[k] for k in ("pid", "file")} for p in report["processes_on_deleted_files"]]
        problem = next(p for p in report["problems"] if str(os.getpid()) in p)
        assert "after it was deleted" in problem and "restart" in problem
    finally:
        store.close()


SPLIT = r"""
import os, sys
from flowstate_jupyter.stores.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
store.write("session", "s1", "", {"n": 1})
os.close(os.open(sys.argv[1], os.O_RDONLY))   # drops this process's locks (the old bug)
print("ready", flush=True)
sys.stdin.readline()                          # meanwhile another process opens and closes it
store.write("session", "s1", "", {"n": 2})    # into the deleted WAL
print("written", flush=True)
sys.stdin.readline()
store.close()
"""


def test_doctor_reports_another_process_writing_to_a_deleted_wal(tmp_path):
    db = tmp_path / "split.db"
    child = subprocess.Popen([sys.executable, "-c", SPLIT, str(db)], env=python_env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        run_python(INC, f"sqlite:///{db}", "other", "1")
        assert not Path(f"{db}-wal").exists(), "the closing process deleted the WAL"
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "written", child.stderr.read()
        with SQLiteStore(db) as store:
            report = store.doctor()
        assert child.pid in [p["pid"] for p in report["processes_on_deleted_files"]]
        problem = next(p for p in report["problems"] if f"process {child.pid} " in p)
        assert "-wal" in problem and "after it was deleted" in problem
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    with SQLiteStore(db) as store:  # the stranded process is gone: nothing to report
        assert store.doctor()["processes_on_deleted_files"] == []
