"""Beyond Windmill: update_state never loses or doubles an item, across processes."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest
from _helpers import ROOT, python_env

import flowstate_jupyter as fs
import flowstate_jupyter.windmill as wm

WORKERS = 4
APPENDS = 250
PATH = "f/watchers/inbox/user"

WORKER = """
import os, sys, time
import flowstate_jupyter.windmill as wm

worker, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):  # start together, so the writers really overlap
    time.sleep(0.005)
for i in range({appends}):
    wm.update_state(lambda items: (items or []) + [f"{{worker}}-{{i}}"], {path!r})
"""


@pytest.mark.slow
def test_four_processes_appending_250_items_each_end_with_1000_distinct_items(tmp_path,
                                                                              wm_env):
    db = tmp_path / "shared.db"
    go = tmp_path / "go"
    wm_env.setenv("FLOWSTATE_STORE", f"sqlite:///{db}")
    wm_env.setenv("FLOWSTATE_USER", "worker")
    code = WORKER.format(appends=APPENDS, path=PATH)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n), str(go)], cwd=ROOT,
                              env=python_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for n in range(WORKERS)]
    time.sleep(0.5)
    go.write_text("go")
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err

    store = fs.open_store(f"sqlite:///{db}")
    with wm.use_store(store):
        items = wm.get_state(PATH)
        version = wm.list_states()[0]["version"]
    store.close()
    assert len(items) == WORKERS * APPENDS
    assert len(set(items)) == WORKERS * APPENDS
    assert set(items) == {f"{w}-{i}" for w in range(WORKERS) for i in range(APPENDS)}
    for w in range(WORKERS):  # each writer's items in the order it appended them
        mine = [int(item.split("-")[1]) for item in items if item.startswith(f"{w}-")]
        assert mine == list(range(APPENDS))
    assert version == WORKERS * APPENDS  # one committed write per append, none retried twice
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(items))
    assert switches > WORKERS, "the writers did not overlap, so this proved nothing"
