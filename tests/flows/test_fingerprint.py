"""Block fingerprints (``flows/fingerprint.py``) and the spans that record them.

A fingerprint says "this block is unchanged" for a replay: the same definition gives the same
fingerprint (in another process too), and a change of the code a block runs, of what that code
reaches by global name, or of its declarations gives another — for the block and every block
around it, never for its siblings. Code is defined here the way a notebook does it: source run
in one namespace, redefined by running new source there.
"""

from __future__ import annotations

import textwrap

from _helpers import run_python
from guide_flow import make_flow
from pydantic import BaseModel

import flowstate_jupyter as fs
from flowstate_jupyter.flows.fingerprint import fingerprint, generation, new_generation

PIPELINE = """
import flowstate_jupyter as fs
from pydantic import BaseModel

class Counter(BaseModel):
    n: int = 0

PREFIX = "hello"

def polish(text):
    return text.strip()

@fs.handler(session_state=Counter)
def count(value, ctx):
    ctx.session.inc_state(n=1)
    return value

@fs.handler
def greet(value, ctx):
    return {"text": polish(f"{PREFIX} {value['name']}")}

@fs.handler
def shout(value, ctx):
    return value["text"].upper()

pipeline = fs.sequencer("pipe").tap(count).then(greet).then(shout)
"""


def cell(ns: dict, source: str) -> dict:
    """Run ``source`` in ``ns``, as a notebook cell runs in the user namespace."""
    exec(compile(textwrap.dedent(source), "<cell>", "exec"), ns)
    return ns


def prints(ns: dict) -> dict[str, str | None]:
    return {name: fingerprint(ns[name], fresh=True) for name in ("count", "greet", "shout",
                                                                 "pipeline")}


def test_the_same_definition_gives_the_same_fingerprint_in_this_and_another_process():
    first, second = cell({}, PIPELINE), cell({}, PIPELINE)
    assert prints(first) == prints(second)
    assert all(len(v or "") == 16 for v in prints(first).values())
    assert len(set(prints(first).values())) == 4
    guide = {b.name: fingerprint(b, fresh=True) for b in make_flow().blocks()}
    code = ("import json, sys; sys.path.insert(0, 'tests'); from guide_flow import make_flow; "
            "from flowstate_jupyter.flows.fingerprint import fingerprint; "
            "print(json.dumps({b.name: fingerprint(b) for b in make_flow().blocks()}))")
    import json
    assert json.loads(run_python(code).stdout) == guide


def test_editing_a_handler_changes_it_and_its_sequencer_but_not_its_siblings():
    ns = cell({}, PIPELINE)
    before = prints(ns)
    cell(ns, """
        @fs.handler
        def greet(value, ctx):
            return {"text": polish(f"{PREFIX}, {value['name']}!")}
        pipeline = fs.sequencer("pipe").tap(count).then(greet).then(shout)
    """)
    after = prints(ns)
    assert after["greet"] != before["greet"] and after["pipeline"] != before["pipeline"]
    assert after["count"] == before["count"] and after["shout"] == before["shout"]


def test_a_helper_or_constant_reached_by_global_name_counts_as_the_blocks_code():
    ns = cell({}, PIPELINE)
    before = prints(ns)
    cell(ns, "def polish(text):\n    return text.strip().title()\n")
    after_helper = prints(ns)
    assert after_helper["greet"] != before["greet"]
    assert after_helper["pipeline"] != before["pipeline"]  # the same block objects, new code
    assert after_helper["shout"] == before["shout"]
    cell(ns, "PREFIX = 'hi'")
    assert prints(ns)["greet"] not in (before["greet"], after_helper["greet"])


def test_a_closure_value_and_a_declared_model_count_too():
    def make(limit: int, default: int) -> fs.Block:
        class Counter(BaseModel):
            n: int = default

        @fs.handler(session_state=Counter)
        def capped(value, ctx):
            return min(value, limit)
        return capped

    base = fingerprint(make(3, 0), fresh=True)
    assert fingerprint(make(3, 0), fresh=True) == base
    assert fingerprint(make(4, 0), fresh=True) != base
    assert fingerprint(make(3, 1), fresh=True) != base


def test_a_kept_fingerprint_lasts_one_generation_and_a_fresh_one_is_always_walked():
    ns = cell({}, PIPELINE)
    kept = fingerprint(ns["greet"])
    cell(ns, "PREFIX = 'changed'")
    assert fingerprint(ns["greet"]) == kept  # kept within the generation
    assert fingerprint(ns["greet"], fresh=True) != kept
    now = generation()
    new_generation()
    assert generation() == now + 1
    assert fingerprint(ns["greet"]) == fingerprint(ns["greet"], fresh=True) != kept


def test_a_block_that_runs_its_enclosing_sequencer_has_a_fingerprint():
    holder: dict = {}

    @fs.handler
    def again(value, ctx):
        return holder["pipe"]  # names the sequencer through a closure: a cycle

    holder["pipe"] = pipe = fs.sequencer("loop").then(again)
    assert len(fingerprint(pipe, fresh=True) or "") == 16
    assert fingerprint(pipe, fresh=True) == fingerprint(pipe, fresh=True)


class Reply(BaseModel):
    text: str


def test_spans_record_the_fingerprint_and_the_type_of_an_output_that_is_not_json(mem):
    @fs.handler
    def model_out(value, ctx):
        return Reply(text="x")

    @fs.handler(output=Reply)
    def declared(value, ctx):
        return Reply(text="y")

    @fs.handler
    def odd(value, ctx):
        return {"when": {1, 2}}

    seq = (fs.sequencer("types").then(model_out).then(declared)
           .map(lambda v: {"plain": [1, "a", None]}).then(odd))
    flow = fs.define_flow("typed", {"go": seq})
    trace = flow.run("go", {}, store=mem).trace
    spans = {s.path: s for s in trace.spans}
    assert spans["go/then[0]/model_out"].output_type == f"{__name__}:Reply"
    assert spans["go/then[1]/declared"].output_type is None  # its output model rebuilds it
    assert spans["go/map[2]"].code is None and spans["go/map[2]"].output_type is None
    assert spans["go/then[3]/odd"].output_type == "builtins:dict"
    assert spans["go"].code == fingerprint(seq, fresh=True)
    assert spans["go/then[0]/model_out"].code == fingerprint(model_out, fresh=True)
    again = flow.trace(trace.request_id, store=mem)
    assert [(s.code, s.output_type) for s in again] == [(s.code, s.output_type) for s in trace]


def test_a_mutable_global_counts_by_type_so_a_counter_changing_at_run_time_is_no_edit():
    ns = cell({}, """
        import flowstate_jupyter as fs
        SEEN = {}

        @fs.handler
        def remember(value, ctx):
            SEEN[value] = SEEN.get(value, 0) + 1
            return value
    """)
    before = fingerprint(ns["remember"], fresh=True)
    ns["SEEN"].update(a=1, b=2)
    assert fingerprint(ns["remember"], fresh=True) == before
    cell(ns, "SEEN = []")  # another type: counts
    assert fingerprint(ns["remember"], fresh=True) != before
