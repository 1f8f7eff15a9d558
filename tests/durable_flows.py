"""Flows the durable-run tests start in one process and resume, race or queue in others.

Blocks leave marks in a file (``FLOWSTATE_TEST_MARKS``) so a test counts how often each ran,
in any process; ``FLOWSTATE_TEST_HANG`` makes a run stop at a named point until it is killed.
Run as a script, this module starts one run and prints what happened as one JSON line::

    python durable_flows.py run URL ACTION SESSION INPUT_JSON
    python durable_flows.py resume URL REQUEST_ID VALUE_JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from pydantic import BaseModel

import flowstate_jupyter as fs


class Work(BaseModel):
    n: int = 0
    log: list[str] = []


class Approval(BaseModel):
    approved: bool
    note: str = ""


def mark(name: str) -> None:
    path = os.environ.get("FLOWSTATE_TEST_MARKS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")


def marks(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1] if path.exists() else []


def hang(where: str) -> None:
    """Stop here (until killed) when FLOWSTATE_TEST_HANG names this point."""
    if os.environ.get("FLOWSTATE_TEST_HANG") == where:
        mark(f"hanging {where}")
        time.sleep(600)


def wait_for_file(path: str | None) -> None:
    while path and not os.path.exists(path):
        time.sleep(0.01)


# -- a pipeline with writes in every step, a side effect, and two places to die ------------------

@fs.handler(session_state=Work)
def prepare(x, ctx):
    mark("prepare")
    ctx.session.inc_state(n=1)
    ctx.session.push_state("log", "prepare")
    return x + 1


@fs.handler(session_state=Work)
def work(x, ctx):
    mark("work")
    ctx.session.inc_state(n=10)
    ctx.session.push_state("log", "work-a")
    sent = ctx.run_once("notify", lambda: mark("notify") or {"sent": x})
    hang("inside")
    ctx.session.push_state("log", "work-b")
    ctx.session.inc_state(n=100)
    return {"x": x * 2, "sent": sent}


@fs.handler(session_state=Work)
def finish(x, ctx):
    mark("finish")
    ctx.session.inc_state(n=1000)
    ctx.session.push_state("log", "finish")
    return x["x"]


def _between(value, ctx):
    hang("between")  # a connector runs between two steps, outside any block
    return value


pipeline = fs.sequencer("pipeline").then(prepare).then(work).then(_between, finish)


# -- a block that asks a person -----------------------------------------------------------------

@fs.handler(session_state=Work)
def draft(x, ctx):
    mark("draft")
    ctx.session.push_state("log", "drafted")
    return {"plan": f"plan for {x}"}


@fs.handler(session_state=Work)
def approve(plan, ctx):
    mark("approve")
    ctx.session.inc_state(n=1)
    answer = ctx.suspend(Approval, message="approve this plan?",
                         timeout_s=float(os.environ.get("FLOWSTATE_TEST_TIMEOUT", "3600")))
    mark(f"answered {answer.approved}")
    ctx.session.push_state("log", f"approved={answer.approved}")
    return {**plan, "approved": answer.approved, "note": answer.note}


approval = fs.sequencer("approval").then(draft).then(approve)


# -- one slow block, for concurrency policies -------------------------------------------------

@fs.handler(session_state=Work)
def slow(label, ctx):
    mark(f"start {label}")
    wait_for_file(os.environ.get("FLOWSTATE_TEST_RELEASE"))
    ctx.session.push_state("log", label)
    mark(f"end {label}")
    return label


flow = fs.define_flow("durable-test", {
    "pipeline": pipeline,
    "approval": approval,
    "rejecting": fs.action(slow, concurrency="reject"),
    "queueing": fs.action(fs.handler(slow.fn, name="slow-q", session_state=Work),
                          concurrency="queue", queue_timeout_s=120),
})


def main(argv: list[str]) -> int:
    verb, url = argv[0], argv[1]
    store = fs.open_store(url)
    wait_for_file(os.environ.get("FLOWSTATE_TEST_START"))
    try:
        if verb == "run":
            action, session, payload = argv[2], argv[3], json.loads(argv[4])
            result = flow.run(action, payload, session=session, user="tester", store=store)
        else:
            result = flow.resume(argv[2], json.loads(argv[3]), store=store)
        print(json.dumps({"outcome": result.status, "request_id": result.request_id,
                          "output": result.output}, default=str))
    except fs.FlowStateError as exc:
        print(json.dumps({"outcome": type(exc).__name__, "message": str(exc),
                          "request_id": getattr(exc, "request_id", None)}))
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
