"""Bubbling (docs/concepts.md, 'Blocks, flows and bubbling'): block-declared state and resources
merge per scope; conflicts raise at build time."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field, field_validator

import flowstate_jupyter as fs


class SwitchMode(BaseModel):
    mode: Literal["chat", "agent"] = "chat"


class RouterMode(BaseModel):  # a separate class declaring the same field the same way
    mode: Literal["chat", "agent"] = "chat"


class StatusText(BaseModel):
    status: str = ""


class StatusNumber(BaseModel):
    status: int = 0


def _noop(input, ctx):
    return input


# ---------------------------------------------------------------------------- the guide's examples

def test_mode_switch_and_mode_router_both_declaring_mode_merge_cleanly(mem):
    seen = []

    @fs.handler(session_state=SwitchMode)
    def mode_switch(input, ctx):
        ctx.session.patch_state(mode="agent")
        return input

    @fs.handler
    def chat(input, ctx):
        return "chat"

    @fs.handler
    def agent(input, ctx):
        seen.append((isinstance(ctx.session.state, SwitchMode),
                     isinstance(ctx.session.state, RouterMode)))
        return "agent"

    mode_router = fs.router(name="mode-router", routes=[chat, agent], session_state=RouterMode,
                            route=lambda input, ctx: agent if ctx.session.state.mode == "agent"
                            else chat)
    flow = fs.define_flow("modes", {"chat": fs.sequencer("p").then(mode_switch).then(mode_router)})
    model = flow.state_model("session")
    assert list(model.model_fields) == ["mode"]
    assert model.model_fields["mode"].default == "chat"
    result = flow.run("chat", None, user="u", store=mem)
    assert result.output == "agent"
    assert seen == [(True, True)]  # every block sees a typed view of the merged state


def _status_blocks():
    @fs.handler(session_state=StatusText)
    def label(input, ctx):
        ctx.session.patch_state(status="done")

    @fs.handler(session_state=StatusNumber)
    def code(input, ctx):
        ctx.session.patch_state(status=200)

    return label, code


def test_status_str_and_status_int_fail_at_define_flow_naming_scope_field_types_and_blocks():
    label, code = _status_blocks()
    with pytest.raises(fs.StateSchemaConflictError) as info:
        fs.define_flow("conflict", {"label": label, "code": code})
    message = str(info.value)
    assert message.startswith(
        "session state field 'status' is declared as str by handler 'label' and as int by "
        "handler 'code'")
    assert "namespaced resource" in message


def test_status_str_and_status_int_conflict_already_when_the_sequencer_is_built():
    label, code = _status_blocks()
    seq = fs.sequencer("both").then(label)
    with pytest.raises(fs.StateSchemaConflictError) as info:
        seq.then(code)
    assert "'status'" in str(info.value) and "handler 'label'" in str(info.value) \
        and "handler 'code'" in str(info.value)


def test_the_same_two_schemas_as_separately_named_resources_work(mem):
    label_res = fs.define_resource(state=StatusText, writable=True)
    code_res = fs.define_resource(state=StatusNumber, writable=True)

    @fs.handler(session_resources={"label_status": label_res})
    def label(input, ctx):
        ctx.session.resources["label_status"].patch_state(status="done")

    @fs.handler(session_resources={"code_status": code_res})
    def code(input, ctx):
        ctx.session.resources["code_status"].patch_state(status=200)

    flow = fs.define_flow("resources", {"go": fs.sequencer("go").then(label).then(code)})
    result = flow.run("go", user="u", store=mem)
    assert result.status == "ok", result.traceback
    s = flow.session(result.session_id, store=mem)
    assert s.resources["label_status"].state.status == "done"
    assert s.resources["code_status"].state.status == 200
    assert flow.state_model("session") is None  # no scope state declared at all


# ---------------------------------------------------------------------------- more rules

def test_conflict_deep_inside_nested_sequencers_names_the_two_blocks():
    label, code = _status_blocks()
    inner = fs.sequencer("inner").then(fs.sequencer("deeper").then(code))
    with pytest.raises(fs.StateSchemaConflictError, match=r"handler 'label'.*handler 'code'"):
        fs.define_flow("deep", {"a": fs.sequencer("outer").then(label), "b": inner})


def test_a_flow_model_with_another_type_conflicts_with_a_block():
    _, code = _status_blocks()
    with pytest.raises(fs.StateSchemaConflictError) as info:
        fs.define_flow("typed", {"code": code}, session=fs.scope(state=StatusText))
    assert "declared as str by flow 'typed' and as int by handler 'code'" in str(info.value)


def test_different_defaults_conflict_unless_the_flow_model_settles_them():
    class ChatFirst(BaseModel):
        mode: Literal["chat", "agent"] = "chat"

    class AgentFirst(BaseModel):
        mode: Literal["chat", "agent"] = "agent"

    a = fs.handler(_noop, name="a", session_state=ChatFirst)
    b = fs.handler(_noop, name="b", session_state=AgentFirst)
    seq = fs.sequencer("ab").then(a).then(b)  # defaults may still be settled by the flow
    with pytest.raises(fs.StateSchemaConflictError) as info:
        fs.define_flow("defaults", {"go": seq})
    assert "has default 'chat' in handler 'a' but 'agent' in handler 'b'" in str(info.value)

    class Settled(BaseModel):
        mode: Literal["chat", "agent"] = "agent"

    flow = fs.define_flow("defaults", {"go": seq}, session=fs.scope(state=Settled))
    assert flow.state_model("session")().mode == "agent"


def test_constraints_are_part_of_the_type():
    class Bounded(BaseModel):
        count: int = Field(0, ge=0)

    class Plain(BaseModel):
        count: int = 0

    with pytest.raises(fs.StateSchemaConflictError, match=r"int \[Ge\(ge=0\)\]"):
        fs.sequencer("s").then(fs.handler(_noop, name="a", user_state=Bounded)) \
            .then(fs.handler(_noop, name="b", user_state=Plain))


def test_a_class_redefined_in_a_later_cell_is_named_as_such():
    def make():
        class Plan(BaseModel):
            goal: str = ""
        return Plan

    class One(BaseModel):
        plan: make() = Field(default_factory=dict)  # type: ignore[valid-type]

    class Two(BaseModel):
        plan: make() = Field(default_factory=dict)  # type: ignore[valid-type]

    with pytest.raises(fs.StateSchemaConflictError, match="redefined in a later cell"):
        fs.sequencer("s").then(fs.handler(_noop, name="a", project_state=One)) \
            .then(fs.handler(_noop, name="b", project_state=Two))


def test_merged_model_keeps_each_blocks_validators(mem):
    class Guarded(BaseModel):
        count: int = 0

        @field_validator("count")
        @classmethod
        def not_thirteen(cls, value):
            if value == 13:
                raise ValueError("13 is unlucky")
            return value

    class Other(BaseModel):
        name: str = ""

    @fs.handler(session_state=Guarded)
    def bad(input, ctx):
        ctx.session.patch_state(count=13)

    flow = fs.define_flow("guarded", {"bad": bad, "other": fs.handler(_noop, name="o",
                                                                      session_state=Other)})
    assert list(flow.state_model("session").model_fields) == ["count", "name"]
    result = flow.run("bad", user="u", store=mem)
    assert isinstance(result.error, fs.ValidationError)
    assert "13 is unlucky" in str(result.error)


def test_resources_same_definition_twice_is_fine_different_ones_conflict_flow_level_overrides():
    cache = fs.define_resource(state=StatusText, writable=True)
    a = fs.handler(_noop, name="a", session_resources={"cache": cache})
    b = fs.handler(_noop, name="b", session_resources={"cache": cache})
    fs.define_flow("same", {"go": fs.sequencer("s").then(a).then(b)})

    other = fs.define_resource(state=StatusNumber, writable=True)
    c = fs.handler(_noop, name="c", session_resources={"cache": other})
    with pytest.raises(fs.ResourceConflictError) as info:
        fs.define_flow("different", {"a": a, "c": c})
    assert str(info.value).startswith(
        "session resource 'cache' is defined differently by handler 'a' and by handler 'c'")
    with pytest.raises(fs.ResourceConflictError):
        fs.sequencer("s").then(a).then(c)

    flow_level = fs.define_resource(state=StatusText, writable=False)
    flow = fs.define_flow("override", {"a": a}, session=fs.scope(resources={"cache": flow_level}))
    assert flow.resources("session")["cache"] is flow_level


def test_sequencer_instance_state_bubbles_from_blocks_into_the_nearest_stateful_sequencer(mem):
    class Loop(BaseModel):
        i: int = 0

    class Extra(BaseModel):
        notes: list[str] = Field(default_factory=list)

    @fs.handler(sequencer_state=Extra)
    def note(input, ctx):
        ctx.sequencer.push_state("notes", f"at {ctx.sequencer.state.i}")
        ctx.sequencer.inc_state(i=1)
        return ctx.sequencer.state.i

    seq = fs.sequencer("loop", state=Loop).do_until(lambda v: v >= 3, note) \
        .map(lambda v, ctx: ctx.sequencer.state.model_dump())
    assert list(seq.instance_model.model_fields) == ["i", "notes"]
    flow = fs.define_flow("loops", {"go": seq})
    assert flow.state_model("session") is None
    first = flow.run("go", user="u", store=mem)
    assert first.output == {"i": 3, "notes": ["at 0", "at 1", "at 2"]}
    again = flow.run("go", user="u", store=mem)  # each execution starts from the defaults
    assert again.output == first.output
    changes = [e for e in first.events if e.get("scope") == "sequencer"]
    assert len(changes) == 6 and changes[0]["sequencer"] == "loop"


def test_sequencer_state_without_a_stateful_sequencer_gets_one_instance_per_run(mem):
    class Tally(BaseModel):
        n: int = 0

    @fs.handler(sequencer_state=Tally)
    def tally(input, ctx):
        ctx.sequencer.inc_state(n=1)
        return ctx.sequencer.state.n

    flow = fs.define_flow("tally", {"go": fs.sequencer("plain").then(tally).then(tally)})
    assert flow.run("go", user="u", store=mem).output == 2
    assert flow.run("go", user="u", store=mem).output == 2


def test_a_sequencer_in_a_defined_flow_takes_no_more_steps():
    seq = fs.sequencer("sealed").then(fs.handler(_noop, name="a"))
    fs.define_flow("sealing", {"go": seq})
    with pytest.raises(RuntimeError, match="part of flow 'sealing' already"):
        seq.then(fs.handler(_noop, name="b", session_state=StatusText))
