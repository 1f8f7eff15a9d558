"""Blocks: handler, router, sequencer and every sequencer method
(docs/concepts.md, 'Blocks, flows and bubbling')."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from pydantic import BaseModel

import flowstate_jupyter as fs


class Num(BaseModel):
    n: int


def _flow(block, **scopes):
    return fs.define_flow("blocks", {"go": block}, **scopes)


def _run(block, value=None, store=None, **options):
    result = _flow(block).run("go", value, user="u", store=store or fs.open_store("memory://"),
                              **options)
    return result


# ---------------------------------------------------------------------------- handler

def test_handler_works_as_bare_decorator_decorator_with_options_and_call():
    @fs.handler
    def plain(input, ctx):
        return input + 1

    @fs.handler(name="named", input=Num)
    def with_options(input, ctx):
        return input.n * 2

    def fn(input):
        return f"<{input}>"

    called = fs.handler(fn, name="wrapped")
    assert (plain.name, with_options.name, called.name) == ("plain", "named", "wrapped")
    assert isinstance(plain, fs.Handler) and plain.fn(1, None) == 2
    assert _run(plain, 1).output == 2
    assert _run(with_options, {"n": 4}).output == 8
    assert _run(called, "x").output == "<x>"


def test_def_and_async_def_handlers_both_run():
    @fs.handler
    async def slow(input, ctx):
        await asyncio.sleep(0)
        return input * 10

    @fs.handler
    def quick(input, ctx):
        return input + 1

    assert _run(fs.sequencer("s").then(slow).then(quick), 2).output == 21


def test_a_block_is_not_called_directly():
    @fs.handler
    def h(input, ctx):
        return input

    with pytest.raises(TypeError, match=r"block.run\(input, ctx\)"):
        h(1, None)


def test_block_run_is_the_one_way_in_and_works_with_a_context_from_a_run():
    inner = fs.handler(lambda x, ctx: x * 3, name="triple")

    @fs.handler
    async def outer(input, ctx):
        return await inner.run(input, ctx)

    assert _run(outer, 5).output == 15


def test_input_and_output_models_are_validated_by_block_run():
    class Out(BaseModel):
        text: str

    @fs.handler(input=Num, output=Out)
    def show(input, ctx):
        assert isinstance(input, Num)
        return {"text": str(input.n)}

    result = _run(show, {"n": 3})
    assert result.output == Out(text="3")

    @fs.handler(output=Out)
    def broken(input, ctx):
        return {"text": None}

    bad = _run(broken, 1)
    assert bad.status == "error" and isinstance(bad.error, fs.ValidationError)
    assert str(bad.error).startswith("handler 'broken' output: field 'text'")


# ---------------------------------------------------------------------------- router

def test_router_runs_the_route_chosen_by_block_or_by_name():
    a = fs.handler(lambda x, ctx: f"a{x}", name="a")
    b = fs.handler(lambda x, ctx: f"b{x}", name="b")
    by_block = fs.router(name="r", routes=[a, b], route=lambda x, ctx: a if x == 1 else b)
    assert _run(by_block, 1).output == "a1" and _run(by_block, 2).output == "b2"

    @fs.router(routes=[a, b])
    async def by_name(x, ctx):
        return "b"

    assert by_name.name == "by_name" and _run(by_name, 7).output == "b7"


def test_router_refuses_a_route_it_does_not_have():
    a = fs.handler(lambda x, ctx: x, name="a")
    r = fs.router(name="r", routes=[a], route=lambda x, ctx: "zzz")
    result = _run(r, 1)
    assert isinstance(result.error, ValueError)
    assert "route returned 'zzz', which is not one of its routes ('a')" in str(result.error)


# ---------------------------------------------------------------------------- sequencer steps

add1 = fs.handler(lambda x, ctx: x + 1, name="add1")
double = fs.handler(lambda x, ctx: x * 2, name="double")


def test_then_with_and_without_connector_then_if_and_map():
    seq = (fs.sequencer("s")
           .then(add1)                                   # 3
           .then(lambda x, ctx: x * 10, add1)           # connector: 30 -> 31
           .then_if(lambda x: x > 100, double)          # skipped
           .then_if(lambda x, ctx: x > 30, double)      # 62
           .map(lambda x: [x, x]))
    assert _run(seq, 2).output == [62, 62]


def test_tap_and_tap_if_run_for_effects_and_keep_the_value(mem):
    class Seen(BaseModel):
        seen: list[int] = []

    @fs.handler(session_state=Seen)
    def log(x, ctx):
        ctx.session.push_state("seen", x)
        return "ignored"

    seq = fs.sequencer("s").tap(log).then(add1).tap_if(lambda x: x == 0, log).tap(log)
    flow = _flow(seq)
    result = flow.run("go", 1, user="u", store=mem)
    assert result.output == 2
    assert flow.session(result.session_id, store=mem).state.seen == [1, 2]


def test_parallel_gives_a_dict_of_outputs_in_the_given_order():
    seq = fs.sequencer("s").parallel({"plus": add1, "times": double, "same": fs.sequencer("id")})
    assert _run(seq, 5).output == {"plus": 6, "times": 10, "same": 5}


def test_for_each_gives_the_outputs_in_item_order_and_refuses_a_non_list():
    @fs.handler
    async def jitter(x, ctx):
        await asyncio.sleep(0.001 * (5 - x))
        return x * x

    seq = fs.sequencer("s").for_each(jitter, max_concurrency=3)
    assert _run(seq, [1, 2, 3, 4]).output == [1, 4, 9, 16]
    assert _run(seq, []).output == []
    bad = _run(seq, {"a": 1})
    assert isinstance(bad.error, TypeError) and "needs a list" in str(bad.error)


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("limit", [1, 3])
def test_parallel_and_for_each_honour_max_concurrency(kind, limit):
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def enter():
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])

    def leave():
        with lock:
            state["now"] -= 1

    if kind == "sync":
        def work(x, ctx):
            enter()
            time.sleep(0.03)
            leave()
            return x
    else:
        async def work(x, ctx):
            enter()
            await asyncio.sleep(0.03)
            leave()
            return x

    block = fs.handler(work, name="work")
    assert _run(fs.sequencer("e").for_each(block, max_concurrency=limit),
                list(range(9))).output == list(range(9))
    assert state["peak"] == limit
    state["peak"] = 0
    branches = {f"b{i}": fs.handler(work, name=f"w{i}") for i in range(6)}
    out = _run(fs.sequencer("p").parallel(branches, max_concurrency=limit), 1).output
    assert out == {f"b{i}": 1 for i in range(6)}
    assert state["peak"] == limit


def test_sync_handlers_overlap_inside_for_each_without_a_limit():
    def nap(x, ctx):
        time.sleep(0.1)
        return x

    started = time.perf_counter()
    assert _run(fs.sequencer("s").for_each(fs.handler(nap, name="nap")), list(range(8))).ok
    assert time.perf_counter() - started < 0.6  # 8 x 100 ms one after another would be 0.8 s


def test_first_failure_in_for_each_stops_new_items_and_raises_that_error():
    ran = []

    def item(x, ctx):
        ran.append(x)
        if x == 2:
            raise KeyError("two")
        return x

    result = _run(fs.sequencer("s").for_each(fs.handler(item, name="item"), max_concurrency=1),
                  [1, 2, 3, 4])
    assert isinstance(result.error, KeyError) and ran == [1, 2]


def test_branch_runs_the_first_matching_case_else_passes_the_value_on():
    seq = fs.sequencer("s").branch([(lambda x: x < 0, double), (lambda x, ctx: x > 10, add1)])
    assert _run(seq, -3).output == -6
    assert _run(seq, 11).output == 12
    assert _run(seq, 5).output == 5
    with_else = fs.sequencer("s2").branch([(lambda x: x < 0, double), (True, add1)])
    assert _run(with_else, 5).output == 6


def test_rescue_catches_by_exception_class_and_the_run_goes_on():
    def boom(x, ctx):
        raise ValueError(f"bad {x}")

    recover = fs.handler(lambda exc, ctx: f"recovered from {type(exc).__name__}: {exc}",
                         name="recover")
    seq = (fs.sequencer("s").then(fs.handler(boom, name="boom")).then(add1)
           .rescue([(KeyError, double), (ValueError, recover)])
           .map(lambda x: x.upper()))
    assert _run(seq, 1).output == "RECOVERED FROM VALUEERROR: BAD 1"

    unmatched = fs.sequencer("s").then(fs.handler(boom, name="boom")).rescue([(KeyError, double)])
    result = _run(unmatched, 1)
    assert isinstance(result.error, ValueError)


def test_rescue_nests_like_try_except():
    def boom(x, ctx):
        raise KeyError("inner")

    def boom_again(exc, ctx):
        raise ValueError("from the rescue")

    seq = (fs.sequencer("s")
           .then(fs.handler(boom, name="boom"))
           .rescue([(ValueError, double)])                         # does not match KeyError
           .then(add1)                                             # skipped
           .rescue([(LookupError, fs.handler(boom_again, name="again"))])  # matches, raises
           .rescue([((TypeError, ValueError), fs.handler(lambda e, ctx: "outer", name="o"))]))
    assert _run(seq, 1).output == "outer"
    with pytest.raises(TypeError, match="exception classes"):
        fs.sequencer("s").rescue([("ValueError", add1)])


def test_do_while_and_do_until_repeat_and_check_after_each_run():
    assert _run(fs.sequencer("w").do_while(lambda x: x < 5, add1), 0).output == 5
    assert _run(fs.sequencer("w").do_while(lambda x: x < 5, add1), 10).output == 11  # once
    assert _run(fs.sequencer("u").do_until(lambda x, ctx: x >= 100, double), 3).output == 192


def test_loops_stop_with_a_clear_error_at_the_default_limit_of_1000():
    calls = []
    counting = fs.handler(lambda x, ctx: calls.append(1) or x, name="spin")
    result = _run(fs.sequencer("forever").do_while(lambda x: True, counting), 0)
    assert isinstance(result.error, fs.LoopLimitError) and len(calls) == 1000
    assert str(result.error).startswith(
        "do_while over handler 'spin' in step 'forever' did not stop after 1000 iterations")
    from flowstate_jupyter.flows.sequencer import DEFAULT_MAX_ITERATIONS
    assert DEFAULT_MAX_ITERATIONS == 1000


def test_loop_limit_is_configurable():
    result = _run(fs.sequencer("u").do_until(lambda x: False, add1, max_iterations=7), 0)
    assert isinstance(result.error, fs.LoopLimitError) and "after 7 iterations" in str(result.error)
    assert "max_iterations=N" in str(result.error)
    with pytest.raises(ValueError):
        fs.sequencer("u").do_until(lambda x: False, add1, max_iterations=0)


def test_steps_take_blocks_not_bare_functions():
    with pytest.raises(TypeError, match=r"wrap the function with fs.handler\(fn\)"):
        fs.sequencer("s").then(lambda x: x)
    seq = fs.sequencer("s")
    with pytest.raises(ValueError, match="cannot contain itself"):
        seq.then(fs.sequencer("outer").then(seq))


def test_describe_and_steps_outline_a_sequencer():
    seq = fs.sequencer("s").then(add1).for_each(double, max_concurrency=2).map(len)
    assert seq.steps == ["then", "for_each (max 2 at a time)", "map len"]
    assert "handler 'double'" in seq.describe()


# ---------------------------------------------------------------------------- ctx

def test_ctx_carries_scopes_ids_flow_path_and_step_id(mem):
    seen = {}

    @fs.handler
    def look(input, ctx):
        seen.update(request=ctx.request.id, run_id=ctx.run_id, session=ctx.session.id,
                    user=ctx.user.id, project=ctx.project.id, store=ctx.store,
                    flow=ctx.flow, path=ctx.flow_path, step=ctx.step_id,
                    current=fs.current_context() is ctx, sequencer=ctx.sequencer)
        return input

    flow = fs.define_flow("paths", {"go": fs.sequencer("outer").then(look)}, path="f/demo/paths")
    result = flow.run("go", 1, user="ann", session="s-1", project="proj", store=mem)
    assert seen == dict(request=result.request_id, run_id=result.request_id, session="s-1",
                        user="ann", project="proj", store=mem, flow=flow, path="f/demo/paths",
                        step="look", current=True, sequencer=None)
    assert fs.define_flow("k", {"go": look}).path == "f/flows/k"
    assert fs.current_context() is None


class Tally(BaseModel):
    n: int = 0


def test_a_ctx_kept_by_a_step_still_names_that_step_after_later_steps_ran(store):
    kept, seen = [], []

    def count(x, ctx):
        seen.append((ctx.step_id, ctx.span_path, fs.current_context() is ctx))
        ctx.session.inc_state(n=1)
        return x + 1

    def keep(x, ctx):
        kept.append((ctx, ctx.step_id, ctx.span_path))
        return count(x, ctx)

    steps = [fs.handler(count, name="a", session_state=Tally),
             fs.handler(count, name="b", session_state=Tally),
             fs.handler(keep, name="k", session_state=Tally),
             fs.handler(count, name="c", session_state=Tally),
             fs.handler(count, name="d", session_state=Tally)]
    seq = fs.sequencer("s")
    for step in steps:
        seq.then(step)
    result = _flow(seq).run("go", 0, user="u", session="s-1", store=store)
    assert result.ok and result.output == 5
    paths = [f"go/then[{i}]/{name}" for i, name in enumerate("abkcd")]
    assert seen == [(name, path, True) for name, path in zip("abkcd", paths)]
    ctx, step, path = kept[0]
    assert (ctx.step_id, ctx.span_path) == (step, path) == ("k", "go/then[2]/k")
    spans = {s.path: s for s in result.trace.spans}
    assert [[c["version"] for c in spans[p].changes] for p in paths] == [[1], [2], [3], [4], [5]]
    assert fs.current_context() is None


def test_current_context_follows_the_block_into_worker_threads(mem):
    steps = []

    def where(x, ctx):
        steps.append((fs.current_context() is ctx, threading.current_thread().name))
        return x

    seq = fs.sequencer("s").for_each(fs.handler(where, name="where"), max_concurrency=2)
    assert _flow(seq).run("go", [1, 2, 3], user="u", store=mem).ok
    assert all(same for same, _ in steps)
    assert all(name.startswith("flowstate-block") for _, name in steps)


def test_progress_of_for_each_and_parallel_reaches_on_event_as_it_happens(mem):
    delivered = []

    @fs.handler
    def item(x, ctx):
        # by the time item 3 runs, progress for the earlier items was already delivered
        if x == 3:
            delivered.append(("seen during run", [e["data"]["done"] for e in list(events)
                                                  if e["type"] == "progress"]))
        return x

    events = []
    seq = (fs.sequencer("s").for_each(item, max_concurrency=1)
           .parallel({"a": fs.handler(lambda v, c: v, name="a"), "b": double}))
    result = _flow(seq).run("go", [1, 2, 3], user="u", store=mem, on_event=events.append)
    assert result.ok, result.traceback
    assert events == result.events
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert progress[:3] == [{"done": 1, "total": 3, "block": "item"},
                            {"done": 2, "total": 3, "block": "item"},
                            {"done": 3, "total": 3, "block": "item"}]
    assert [p["done"] for p in progress[3:]] == [1, 2] and progress[3]["total"] == 2
    assert delivered == [("seen during run", [1, 2])]


def test_emit_refuses_reserved_types_and_non_json(mem):
    @fs.handler
    def bad(x, ctx):
        ctx.emit(x, {"a": 1})

    assert isinstance(_run(bad, "state_change", mem).error, ValueError)

    @fs.handler
    def not_json(x, ctx):
        ctx.emit("message", {"when": object()})

    assert isinstance(_run(not_json, 1, mem).error, fs.ValidationError)
