"""Fresh ids (``base/ids.py``): ``new_id`` hands out 12 random hex digits after the prefix,
drawn 64 ids at a time from one ``os.urandom`` call. No two ids repeat, whatever threads ask,
and a forked child draws its own digits instead of repeating the ones its parent had drawn and
not yet handed out (the pool would otherwise be copied into it)."""

from __future__ import annotations

import os
import re
import sys
import threading

import pytest

from flowstate_jupyter.base.ids import check_id, new_id

_SHAPE = re.compile(r"r-[0-9a-f]{12}")


def test_new_ids_are_valid_prefixed_hex_and_never_repeat_across_many_pools() -> None:
    ids = [new_id("r") for _ in range(64 * 40 + 7)]
    assert all(_SHAPE.fullmatch(i) and check_id(i) == i for i in ids)
    assert len(set(ids)) == len(ids)


def test_threads_drawing_ids_at_once_never_get_the_same_one() -> None:
    got: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def draw(out: list[str]) -> None:
        start.wait()
        for _ in range(3000):
            out.append(new_id("r"))

    threads = [threading.Thread(target=draw, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in got for i in out]
    assert len(every) == 8 * 3000
    assert len(set(every)) == len(every)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin",
                    reason="needs os.fork")
def test_a_forked_child_does_not_repeat_the_ids_its_parent_hands_out_next() -> None:
    new_id("r")  # the parent has drawn a pool and holds 63 digits not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next 63 ids, then out without running the parent's cleanup
        try:
            os.write(write, " ".join(new_id("r") for _ in range(63)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    parent = [new_id("r") for _ in range(63)]
    assert len(child) == 63
    assert not set(child) & set(parent)
