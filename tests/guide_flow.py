"""The complete flow of flow-state.dev's state-storage guide, written in Python.

Session state ``mode`` / ``message_count``, a session ``artifacts`` resource, a user
``preferences`` resource, client data for all three, and two actions: ``chat`` and ``save``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

import flowstate_jupyter as fs


class SessionState(BaseModel):
    mode: Literal["chat", "agent"] = "chat"
    message_count: int = 0


class ModeState(BaseModel):  # what the mode blocks declare: bubbles into SessionState
    mode: Literal["chat", "agent"] = "chat"


class CountState(BaseModel):
    message_count: int = 0


class ArtifactsState(BaseModel):
    titles: list[str] = Field(default_factory=list)
    last_saved: str | None = None


class Preferences(BaseModel):
    theme: Literal["light", "dark"] = "light"
    language: str = "en"


class ChatInput(BaseModel):
    message: str


class SaveInput(BaseModel):
    title: str
    body: str = ""
    theme: Literal["light", "dark"] | None = None


artifacts = fs.define_resource(
    state=ArtifactsState, writable=True,
    client_data=lambda state: {"count": len(state.titles), "titles": list(state.titles)})
preferences = fs.define_resource(
    state=Preferences, writable=True,
    client_data=lambda state: {"theme": state.theme, "language": state.language})


@fs.handler(session_state=CountState)
def count_message(input, ctx):
    ctx.session.inc_state(message_count=1)
    return input


@fs.handler(session_state=ModeState)
def mode_switch(input, ctx):
    ctx.session.patch_state(mode="agent")
    return input


@fs.handler
def chat_reply(input, ctx):
    return {"reply": f"chat: {input.message}"}


@fs.handler
async def agent_reply(input, ctx):
    ctx.emit("message", {"text": "planning"})
    return {"reply": f"agent: {input.message}"}


mode_router = fs.router(
    name="mode-router", routes=[chat_reply, agent_reply], session_state=ModeState,
    route=lambda input, ctx: agent_reply if ctx.session.state.mode == "agent" else chat_reply)

chat_pipeline = (fs.sequencer("chat-pipeline", input=ChatInput)
                 .tap(count_message)
                 .then_if(lambda input, ctx: input.message.startswith("/agent"), mode_switch)
                 .then(mode_router)
                 .map(lambda out, ctx: {**out, "count": ctx.session.state.message_count}))


@fs.handler(session_resources={"artifacts": artifacts}, user_resources={"preferences": preferences})
def save_artifact(input, ctx):
    res = ctx.session.resources.artifacts
    res.push_state("titles", input.title)
    res.patch_state(last_saved=input.title)
    res.write_content(input.body)
    if input.theme is not None:
        ctx.user.resources["preferences"].patch_state(theme=input.theme)
    return {"saved": input.title}


def make_flow() -> fs.Flow:
    return fs.define_flow(
        kind="assistant",
        actions={"chat": chat_pipeline, "save": fs.action(save_artifact, input=SaveInput)},
        session=fs.scope(state=SessionState, resources={"artifacts": artifacts},
                         client_data={"mode": lambda ctx: ctx.state.mode,
                                      "message_count": lambda ctx: ctx.state.message_count,
                                      "artifact_count":
                                          lambda ctx: len(ctx.resources.artifacts.state.titles)}),
        user=fs.scope(resources={"preferences": preferences},
                      client_data={"theme": lambda ctx: ctx.resources.preferences.state.theme}),
    )
