"""The planner flow of the trace-view and resume-form tests: a plan is drafted, waits for a
person's approval (``ctx.suspend``), then applied; ``twice`` asks a second time, with enums,
numbers and lists. A module of its own, so other processes and kernels import the same flow."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, Field

import flowstate_jupyter as fs


class Plans(BaseModel):
    applied: list[str] = []


class Approval(BaseModel):
    approved: bool = Field(description="go ahead with this plan?")
    note: str = Field("", description="for the log", json_schema_extra={"format": "markdown"})


class Size(enum.Enum):
    small = "S"
    large = "L"


class Details(BaseModel):
    size: Size
    channel: Literal["mail", "chat", "phone", "fax", "post"] = "mail"
    budget: int = Field(description="whole euros")
    owners: list[str]


@fs.handler
def draft(goal, ctx):
    if not goal:
        raise ValueError("a goal is needed")
    return {"goal": goal, "steps": [f"outline {goal}", f"do {goal}"]}


@fs.handler
def approve(plan, ctx):
    answer = ctx.suspend(Approval, message=f"Approve the plan for {plan['goal']}?",
                         timeout_s=3600)
    return {**plan, "approved": answer.approved, "note": answer.note}


@fs.handler
def detail(plan, ctx):
    more = ctx.suspend(Details, message="Details, please")
    return {**plan, "budget": more.budget}


@fs.handler(session_state=Plans)
def apply(plan, ctx):
    if plan["approved"]:
        ctx.session.push_state("applied", plan["goal"])
    return {"goal": plan["goal"], "applied": plan["approved"]}


def make_flow() -> fs.Flow:
    return fs.define_flow(kind="planner", actions={
        "plan": fs.sequencer("plan").then(draft).then(approve).then(apply),
        "twice": fs.sequencer("twice").then(draft).then(approve).then(detail).then(apply),
    })
