"""A flow with every construct the picture draws, and block names that are hard to draw.

Used by the graph tests (tests/flows/test_flows_graph.py) and, as the source of a notebook cell,
by the browser test (tests/e2e/test_flow_graph.py). ``make_flow()`` builds a fresh flow.

The ``chat`` action: a sequencer whose steps are, by index,
0 ``then`` a router (routes ``quiet`` / ``loud "one" [x]``), 1 ``then_if``, 2 ``map``,
3 ``for_each``, 4 ``parallel`` (branches ``left`` / ``right``), 5 ``branch`` (a case and an
else), 6 ``then`` a block that fails when asked to, 7 ``rescue``, 8 ``tap``, 9 ``tap_if`` a
nested sequencer, 10 ``do_while``, 11 ``do_until``. ``ModeState.mode`` is declared by the
router and by both routes (a shared field); ``notes`` and the ``plan`` resource only by
``loud``; ``count`` by the flow and by the count handler.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

import flowstate_jupyter as fs

HOSTILE = 'loud "one" [x]'
UNICODE = "ünï <b>cøde</b> %% end #quot; &amp; 💥"


class ModeState(BaseModel):
    mode: Literal["quiet", "loud"] = "quiet"


class CountState(BaseModel):
    count: int = 0


class LoudState(BaseModel):
    mode: Literal["quiet", "loud"] = "quiet"
    notes: list[str] = Field(default_factory=list)


class PlanState(BaseModel):
    steps: list[str] = Field(default_factory=list)


class Loop(BaseModel):
    rounds: int = 0


def make_flow() -> fs.Flow:
    plan = fs.define_resource(state=PlanState, writable=True)

    @fs.handler(session_state=ModeState)
    def quiet(value, ctx):
        return {"said": "quiet", **(value or {})}

    def loud_fn(value, ctx):
        ctx.session.push_state("notes", "loud")
        ctx.session.resources["plan"].push_state("steps", "shout")
        return {"said": "loud", **(value or {})}

    loud = fs.handler(loud_fn, name=HOSTILE, session_state=LoudState,
                      session_resources={"plan": plan})

    router = fs.router(name="mode-router", routes=[quiet, loud], session_state=ModeState,
                       route=lambda value, ctx: HOSTILE if ctx.session.state.mode == "loud"
                       else quiet)

    @fs.handler(name=UNICODE, session_state=CountState)
    def count(value, ctx):
        ctx.session.inc_state(count=1)
        return value

    @fs.handler
    def double(item):
        return item * 2

    @fs.handler
    def left(value):
        return "L"

    @fs.handler
    def right(value):
        return "R"

    @fs.handler
    def small(value):
        return {"size": "small"}

    @fs.handler
    def big(value):
        return {"size": "big"}

    @fs.handler
    def maybe_fail(value, ctx):
        if ctx.session.state.mode == "loud":
            raise ValueError("too loud")
        return value

    @fs.handler
    def recover(error):
        return {"recovered": str(error)}

    @fs.handler
    def log(value):
        return None

    inner = fs.sequencer("inner").then(log).map(lambda value: value)

    @fs.handler(request_state=Loop)
    def spin(value, ctx):
        ctx.request.inc_state(rounds=1)
        return value

    def is_big(value):
        return bool(value) and value.get("size") == "big"

    def want_count(value):
        return True

    def to_list(value):
        return [1, 2, 3]

    def again(value, ctx):
        return ctx.request.state.rounds < 2

    def done(value, ctx):
        return ctx.request.state.rounds >= 3

    pipeline = (fs.sequencer("pipeline")
                .then(router)
                .then_if(want_count, count)
                .map(to_list)
                .for_each(double)
                .parallel({"left": left, "right": right})
                .branch([(is_big, big), (None, small)])
                .then(maybe_fail)
                .rescue([(ValueError, recover)])
                .tap(log)
                .tap_if(want_count, inner)
                .do_while(again, spin)
                .do_until(done, spin))

    return fs.define_flow(kind="graphs", actions={"chat": pipeline, "count": count},
                          session=fs.scope(state=CountState))
