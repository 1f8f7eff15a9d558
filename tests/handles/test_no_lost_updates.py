"""No lost updates (docs/concepts.md, 'State operations'): concurrent writers from processes and
threads, on every backend.

``inc_state``, ``push_state`` and ``set_state_record`` must never lose an update, whoever the
writers are: 4 processes (spawned, each opening its own store), 8 threads sharing one store
object, or 4 threads with a store object each on one file. ``atomic_state`` re-runs its
function on conflict and gives up with ``ConcurrentModificationError(attempts=4)``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable

import pytest
from pydantic import BaseModel, Field

import flowstate_jupyter as fs
from flowstate_jupyter.errors import ConcurrentModificationError

PROCESSES = 4
PER_PROCESS = 250
TOTAL = PROCESSES * PER_PROCESS


class Shared(BaseModel):
    count: int = 0
    items: list[str] = Field(default_factory=list)
    records: dict[str, int] = Field(default_factory=dict)
    note: str = ""


# ---------------------------------------------------------------------------- workers
# Module-level so that spawned processes can import them.

_start: multiprocessing.synchronize.Barrier | None = None  # type: ignore[name-defined]


def _init_worker(barrier) -> None:
    global _start
    _start = barrier


def _apply(handle: fs.ScopeHandle, op: str, worker: int, i: int) -> bool:
    if op == "inc_state":
        return handle.inc_state(count=1)
    if op == "push_state":
        return handle.push_state("items", f"w{worker}-{i}")
    if op == "set_state_record":
        return handle.set_state_record("records", f"w{worker}-{i}", worker * 10_000 + i)
    raise ValueError(op)


def _process_worker(args: tuple[str, str, str, int, int]) -> tuple[int, int]:
    """Open our own store, wait for every other worker, then write ``count`` times.

    Returns this process's id and how many calls reported a committed write.
    """
    url, scope_id, op, worker, count = args
    store = fs.open_store(url, timeout=30)
    try:
        handle = fs.ScopeHandle(store, "session", scope_id, state=Shared)
        assert _start is not None
        _start.wait(timeout=60)  # all four write at the same time, not one after another
        committed = sum(_apply(handle, op, worker, i) for i in range(count))
        return os.getpid(), committed
    finally:
        store.close()


@pytest.fixture(scope="module")
def pool():
    """Four spawned worker processes, shared by the process tests (spawning is the slow part)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    with ctx.Pool(PROCESSES, initializer=_init_worker, initargs=(barrier,)) as p:
        yield p


def _check_result(handle: fs.ScopeHandle, op: str, workers: int, per_worker: int) -> None:
    total = workers * per_worker
    state = handle.state
    assert handle.version == total, "every operation is one committed version"
    if op == "inc_state":
        assert state.count == total
    elif op == "push_state":
        assert len(state.items) == total
        expected = {f"w{w}-{i}" for w in range(workers) for i in range(per_worker)}
        assert set(state.items) == expected
        for w in range(workers):  # each writer's own items stay in its order
            mine = [x for x in state.items if x.startswith(f"w{w}-")]
            assert mine == [f"w{w}-{i}" for i in range(per_worker)]
    else:
        assert state.records == {f"w{w}-{i}": w * 10_000 + i
                                 for w in range(workers) for i in range(per_worker)}


OPS = ["inc_state", "push_state", "set_state_record"]


# ---------------------------------------------------------------------------- processes

@pytest.mark.parametrize("op", OPS)
def test_four_processes_writing_one_shared_store_lose_no_update(pool, shared_backend, op):
    url = shared_backend.url  # a SQLite file, or a PostgreSQL schema (memory is per process)
    shared_backend.open().close()  # create the tables once, before the race
    results = pool.map(_process_worker,
                       [(url, "race", op, w, PER_PROCESS) for w in range(PROCESSES)],
                       chunksize=1)
    assert len({pid for pid, _ in results} - {os.getpid()}) == PROCESSES, \
        "each writer ran in its own process"
    assert all(committed == PER_PROCESS for _, committed in results), \
        "every call reported a committed write"
    with fs.open_store(url) as store:
        handle = fs.ScopeHandle(store, "session", "race", state=Shared)
        _check_result(handle, op, PROCESSES, PER_PROCESS)
        assert len(store.changes()) == TOTAL, "one change-log item per committed write"


# ---------------------------------------------------------------------------- threads

def _run_threads(workers: int, target: Callable[[int], int]) -> list[int]:
    start = threading.Barrier(workers)
    committed = [0] * workers
    errors: list[BaseException] = []

    def body(w: int) -> None:
        try:
            start.wait(timeout=30)
            committed[w] = target(w)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer thread hung"
    assert not errors, errors
    return committed


@pytest.mark.parametrize("op", OPS)
def test_eight_threads_sharing_one_store_object_lose_no_update(backend, op):
    workers, per = 8, TOTAL // 8
    with backend.open() as store:
        handle = fs.ScopeHandle(store, "session", "race", state=Shared)
        committed = _run_threads(
            workers, lambda w: sum(_apply(handle, op, w, i) for i in range(per)))
        assert committed == [per] * workers
        _check_result(handle, op, workers, per)


@pytest.mark.parametrize("op", OPS)
def test_four_threads_each_with_its_own_store_object_lose_no_update(shared_backend, op):
    workers, per = 4, TOTAL // 4
    stores = [shared_backend.open(timeout=30) for _ in range(workers)]
    try:
        handles = [fs.ScopeHandle(s, "session", "race", state=Shared) for s in stores]
        committed = _run_threads(
            workers, lambda w: sum(_apply(handles[w], op, w, i) for i in range(per)))
        assert committed == [per] * workers
        _check_result(handles[0], op, workers, per)
    finally:
        for s in stores:
            s.close()


# ---------------------------------------------------------------------------- atomic_state

# ``store`` is the shared fixture of tests/conftest.py: every backend (memory, SQLite, PostgreSQL).


def test_atomic_state_reruns_its_function_when_the_record_changed_under_it(store):
    handle = fs.ScopeHandle(store, "session", "s1", state=Shared)
    other = fs.ScopeHandle(store, "session", "s1", state=Shared)
    handle.patch_state(count=5)
    seen: list[int] = []

    def double(state: Shared) -> dict:
        seen.append(state.count)
        if len(seen) == 1:  # interfere once: the record changes while fn runs
            other.patch_state(note="interfering")
        return {"count": state.count * 2}

    assert handle.atomic_state(double) is True
    assert len(seen) == 2, "the function ran again after the conflict"
    assert handle.state.count == 10
    assert handle.version == 2, "one committed atomic write after the first patch"
    entry = handle.history(limit=1)[0]
    assert (entry.version, entry.operation, entry.state["count"]) == (2, "atomic", 10)


def test_atomic_state_against_a_writer_that_always_interferes_gives_up_after_four_attempts(store):
    handle = fs.ScopeHandle(store, "session", "s1", state=Shared)
    other = fs.ScopeHandle(store, "session", "s1", state=Shared)
    handle.patch_state(count=1)
    changes_before = len(store.changes())
    calls = 0

    def always_interfered(state: Shared) -> dict:
        nonlocal calls
        calls += 1
        other.inc_state(count=100)  # every attempt finds the record changed under it
        return {"note": f"attempt {calls}"}

    started = time.monotonic()
    with pytest.raises(ConcurrentModificationError) as info:
        handle.atomic_state(always_interfered)
    elapsed = time.monotonic() - started
    assert info.value.attempts == 4
    assert calls == 4, "1 attempt + 3 retries, each running the function"
    assert elapsed >= 0.010 + 0.020 + 0.040 - 0.005, "10 ms doubling backoff between attempts"
    assert "s1" in str(info.value)
    assert handle.state.note == "", "the atomic write never committed"
    assert handle.state.count == 1, "the re-entrant writes were rolled back with their attempt"
    assert handle.version == 1
    assert len(store.changes()) == changes_before, "no change-log item for a failed write"
