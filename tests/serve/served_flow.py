"""The flow the serving tests serve: its state and one resource hold a marker that must never
leave the server; its client data shows what may.

``flow`` is bound at module level, so ``flowstate serve served_flow:flow`` serves it from this
folder. Session state ``secret`` and the ``vault`` resource (state and content) get ``MARKER``
on every ``say``; ``fail`` raises an error whose message quotes it; the client-data function
``leaky`` raises a ``KeyError`` naming it. None of that may appear in any byte the server sends.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

import flowstate_jupyter as fs

MARKER = "MARKER-7f3c9e-never-leaves-the-server"


class SessionState(BaseModel):
    secret: str = ""
    count: int = 0
    mode: str = "chat"
    blob: str = ""


class Vault(BaseModel):
    token: str = ""


class Notes(BaseModel):
    items: list[str] = Field(default_factory=list)


class Say(BaseModel):
    message: str = Field(max_length=200)
    times: int = Field(1, ge=1, le=10)


class Fail(BaseModel):
    reason: str = "boom"


vault = fs.define_resource(state=Vault, writable=True)  # no client_data: never reaches a client
notes = fs.define_resource(state=Notes, writable=True,
                           client_data=lambda state: {"count": len(state.items)})


@fs.handler(session_state=SessionState,
            session_resources={"vault": vault, "notes": notes})
def say(input: Say, ctx) -> dict:
    """Count the message, keep the secret, note it."""
    ctx.session.inc_state(count=input.times)
    ctx.session.patch_state(secret=MARKER)
    ctx.session.resources.vault.patch_state(token=MARKER)
    ctx.session.resources.vault.write_content(f"content {MARKER}")
    ctx.session.resources.notes.push_state("items", input.message)
    return {"echo": input.message, "count": ctx.session.state.count}


@fs.handler(session_state=SessionState)
def fail(input: Fail, ctx) -> dict:
    """Always fails, quoting the secret in its message."""
    ctx.session.patch_state(secret=MARKER)
    raise RuntimeError(f"{input.reason}: {ctx.session.state.secret}")


def _leaky(ctx) -> str:
    return {"known": "value"}[ctx.state.secret] if ctx.state.secret else "none yet"


def make_flow() -> fs.Flow:
    return fs.define_flow(
        kind="served",
        actions={"say": fs.action(say, input=Say), "fail": fs.action(fail, input=Fail)},
        session=fs.scope(state=SessionState,
                         client_data={"count": lambda c: c.state.count,
                                      "mode": lambda c: c.state.mode,
                                      "blob_size": lambda c: len(c.state.blob),
                                      "blob": lambda c: c.state.blob,
                                      "leaky": _leaky}),
        user=fs.scope(client_data={"greeting": lambda c: c.state.get("greeting", "hello")}),
    )


flow = make_flow()


def write_from_another_process(store_url: str, session_id: str, mode: str) -> float:
    """Run in a child process: change the session's mode; returns the time of the commit."""
    import time
    store = fs.open_store(store_url)
    try:
        session = flow.session(session_id, store=store)
        session.patch_state(mode=mode)
        return time.time()
    finally:
        store.close()
