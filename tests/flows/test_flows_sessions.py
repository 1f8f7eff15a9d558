"""Sessions outside runs (docs/guide.md, 'Sessions outside runs'): handles, ownership, listing,
journal, history, client data."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from pydantic import BaseModel, Field

import flowstate_jupyter as fs
from flowstate_jupyter.flows.bookkeeping import ensure_session
from flowstate_jupyter.stores.base import Change


class SessionState(BaseModel):
    mode: str = "chat"
    turns: int = 0


class SearchCache(BaseModel):
    entries: dict[str, str] = Field(default_factory=dict)


class Query(BaseModel):
    q: str


search_cache = fs.define_resource(state=SearchCache, writable=True)
lookups: list[str] = []


@fs.handler(input=Query, session_resources={"search_cache": search_cache})
def web_search(input, ctx):
    """The guide's block-private cache: a namespaced session resource only this block uses."""
    cache = ctx.session.resources["search_cache"]
    hit = cache.state.entries.get(input.q)
    if hit is not None:
        return {"result": hit, "cached": True}
    lookups.append(input.q)
    result = f"results for {input.q}"
    cache.set_state_record("entries", input.q, result)
    return {"result": result, "cached": False}


@fs.handler(session_state=SessionState)
def turn(input, ctx):
    ctx.session.inc_state(turns=1)
    return input


def _flow(kind="sessions", **scopes):
    return fs.define_flow(kind, {"search": web_search, "turn": turn}, **scopes)


# ---------------------------------------------------------------------------- search_cache

def test_block_private_search_cache_survives_runs_of_one_session_and_is_absent_from_another(store):
    flow = _flow()
    lookups.clear()
    one = flow.run("search", {"q": "pydantic"}, user="alice", session="s1", store=store)
    again = flow.run("search", {"q": "pydantic"}, user="alice", session="s1", store=store)
    assert one.output == {"result": "results for pydantic", "cached": False}
    assert again.output == {"result": "results for pydantic", "cached": True}
    other = flow.run("search", {"q": "pydantic"}, user="alice", session="s2", store=store)
    assert other.output["cached"] is False
    assert lookups == ["pydantic", "pydantic"]

    s1, s3 = flow.session("s1", store=store), flow.session("s3", user="alice", store=store)
    assert s1.resources["search_cache"].state.entries == {"pydantic": "results for pydantic"}
    assert s3.resources["search_cache"].state.entries == {}
    assert s3.resources["search_cache"].version == 0  # never written for that session
    assert "search_cache" not in s1.snapshot()["resources"]["session"]  # never reaches a client
    assert flow.state_model("session") is SessionState  # and it adds no scope-state field


# ---------------------------------------------------------------------------- the handle

def test_a_session_is_the_session_scope_handle_with_user_and_project(store):
    flow = _flow(project=fs.scope(state=SessionState))
    s = flow.session("s1", user="alice", project="team", store=store)
    assert isinstance(s, fs.Session) and isinstance(s, fs.ScopeHandle)
    assert (s.id, s.scope, s.user.id, s.project.id) == ("s1", "session", "alice", "team")
    assert s.patch_state(mode="agent") is True and s.patch_state(mode="agent") is False
    assert s.state.mode == "agent" and s.version == 1
    s.project.inc_state(turns=5)
    result = s.run("turn", "hello")
    assert result.ok and result.session_id == "s1" and result.user == "alice"
    assert s.state.turns == 1 and s.project.state.turns == 5
    assert flow.session("s1", store=store).user.id == "alice"  # owner found from $meta


def test_new_session_gets_a_generated_id(mem):
    s = _flow().session(user="bob", store=mem)
    assert s.id.startswith("s-") and s.user.id == "bob"


def test_a_session_belongs_to_one_user_and_one_flow_kind(store):
    flow = _flow()
    flow.session("s1", user="alice", store=store)
    with pytest.raises(fs.AccessDeniedError) as info:
        flow.session("s1", user="bob", store=store)
    assert str(info.value).startswith("session 's1' belongs to user 'alice', not 'bob'")
    with pytest.raises(fs.AccessDeniedError):
        flow.run("turn", 1, user="bob", session="s1", store=store)
    other_kind = _flow("another-kind")
    with pytest.raises(fs.AccessDeniedError,
                       match="belongs to flow 'sessions', not 'another-kind'"):
        other_kind.run("turn", 1, session="s1", store=store)
    assert store.list(scope="request") == []
    meta = store.read("session", "s1", "$meta").state
    assert meta["user"] == "alice" and meta["flow"] == "sessions" and meta["created_at"] > 0


@pytest.mark.parametrize("meta", [{"flow": "sessions"}, {"flow": "sessions", "user": 7},
                                  {"flow": "sessions", "user": None}])
def test_a_session_whose_record_names_no_owner_is_refused_and_left_as_it_is(store, meta):
    store.write("session", "s1", "$meta", meta)  # written by hand, or damaged
    flow = _flow()
    with pytest.raises(fs.AccessDeniedError, match=r"session 's1' has no owner in its \$meta"):
        flow.session("s1", store=store)
    with pytest.raises(fs.AccessDeniedError, match="has no owner"):
        flow.session("s1", user="alice", store=store)
    with pytest.raises(fs.AccessDeniedError, match="has no owner"):
        flow.run("turn", 1, session="s1", store=store)
    assert store.list(scope="request") == []
    record = store.read("session", "s1", "$meta")
    assert record.version == 1 and record.state == meta
    assert store.read("session", "s1", "") is None  # no session state was written either


def test_invalid_ids_are_refused(mem):
    with pytest.raises(fs.InvalidIdError):
        _flow().session("not ok!", store=mem)
    with pytest.raises(fs.InvalidIdError):
        _flow().run("turn", 1, user="a b", store=mem)


def test_run_block_runs_any_block_of_the_flow_on_the_session(mem):
    flow = _flow()
    s = flow.session("s1", user="alice", store=mem)
    result = s.run_block(turn, "x")
    assert result.ok and s.state.turns == 1
    record = mem.read("request", result.request_id, "$request").state
    assert record["action"] is None and record["block"] == "turn"
    with pytest.raises(fs.ValidationError):
        s.run_block(web_search, {"nope": 1})

    class Alien(BaseModel):
        alien: int = 0

    stranger = fs.handler(lambda x, ctx: x, name="stranger", session_state=Alien)
    with pytest.raises(ValueError, match="not part of flow 'sessions'"):
        s.run_block(stranger, 1)
    fitting = fs.handler(lambda x, ctx: ctx.session.state.turns, name="fits",
                         session_state=SessionState)
    assert s.run_block(fitting, None).output == 1


# ---------------------------------------------------------------------------- listing

def test_sessions_lists_this_flow_kinds_sessions_with_update_times(store):
    flow, other = _flow(), _flow("other")
    flow.run("turn", 1, user="alice", session="a1", store=store)
    time.sleep(0.01)
    flow.session("b1", user="bob", store=store)
    other.session("o1", user="alice", store=store)
    time.sleep(0.01)
    flow.run("turn", 1, session="a1", store=store)  # a1 is now the most recently updated
    listed = flow.sessions(store=store)
    assert [item["id"] for item in listed] == ["a1", "b1"]
    assert listed[0]["user"] == "alice" and listed[0]["flow"] == "sessions"
    assert listed[0]["updated_at"] > listed[1]["updated_at"] >= listed[1]["created_at"]
    assert [item["id"] for item in flow.sessions(user="bob", store=store)] == ["b1"]


def test_a_run_touches_its_session_without_writing_a_version_of_its_record(store):
    # retention finds a session's runs from the request records, so a run's end only marks
    # the session as used: no new version, history row or change-log item for its $meta
    flow = _flow()
    flow.session("a1", user="alice", store=store)
    meta = store.read("session", "a1", "$meta")
    seq = store.changes()[-1][0]
    time.sleep(0.01)
    result = flow.run("turn", 1, session="a1", store=store)
    after = store.read("session", "a1", "$meta")
    assert (after.version, after.state, after.content) == (meta.version, meta.state, meta.content)
    assert len(store.history("session", "a1", "$meta")) == 1
    assert after.accessed_at > meta.updated_at
    assert {e["type"] for _, e in store.changes(seq)} == {"request", "state_change"}
    assert flow.sessions(store=store)[0]["updated_at"] == after.accessed_at
    assert result.ok


def test_session_writes_outside_runs_count_as_updates(mem):
    flow = _flow()
    old = flow.session("old", user="u", store=mem)
    flow.session("new", user="u", store=mem)
    time.sleep(0.01)
    old.patch_state(mode="agent")
    assert [item["id"] for item in flow.sessions(store=mem)] == ["old", "new"]


def test_sessions_come_a_page_at_a_time_each_from_one_store_call(mem):
    for i in range(250):
        ensure_session(mem, f"s{i:03d}", user=f"u{i % 10}", flow_kind="sessions")
    ensure_session(mem, "elsewhere", user="u3", flow_kind="other")
    calls = []
    real = mem.list_recent
    mem.list_recent = lambda *a, **k: calls.append((a, k)) or real(*a, **k)
    flow = _flow()
    pages = [flow.sessions(store=mem)]
    assert len(pages[0]) == 100  # the default page
    assert calls == [(("session", "$meta"),
                      {"where": {"flow": "sessions"}, "limit": 100, "after": None})]
    while len(pages[-1]) == 100:
        pages.append(flow.sessions(after=pages[-1][-1], store=mem))
    assert [len(page) for page in pages] == [100, 100, 50] and len(calls) == 3
    ids = [item["id"] for page in pages for item in page]
    assert ids == [item["id"] for item in flow.sessions(limit=None, store=mem)]
    assert sorted(ids) == [f"s{i:03d}" for i in range(250)]  # each once
    updated = [item["updated_at"] for page in pages for item in page]
    assert updated == sorted(updated, reverse=True)
    mine = flow.sessions(user="u3", limit=10, store=mem)
    assert [item["id"] for item in mine] == [i for i in ids if int(i[1:]) % 10 == 3][:10]
    with pytest.raises(ValueError, match="after"):
        flow.sessions(after="s100", store=mem)


# ---------------------------------------------------------------------------- journal and history

def test_journal_appends_lists_newest_first_and_stays_bounded(store):
    s = _flow().session("s1", user="alice", store=store)
    entry = s.journal.append("switched mode", source="notebook", tags=["mode"])
    assert entry["text"] == "switched mode" and entry["tags"] == ["mode"]
    s.journal.append("second", source="cli")
    entries = s.journal.entries(limit=10)
    assert [e["text"] for e in entries] == ["second", "switched mode"]
    assert entries[1]["source"] == "notebook" and entries[0]["tags"] == []
    assert entries[0]["ts"] >= entries[1]["ts"]
    from flowstate_jupyter.handles.journal import Journal
    small = Journal(store, "s2", max_entries=5)
    for i in range(12):
        small.append(f"note {i}")
    assert len(small) == 5
    assert [e["text"] for e in small.entries(limit=None)] == [f"note {i}" for i in range(11, 6, -1)]
    with pytest.raises(fs.ValidationError, match="over the limit"):
        s.journal.append("x" * 5000)
    assert s.state.mode == "chat"  # the journal is not scope state


def test_history_lists_versions_with_time_operation_and_state(mem):
    flow = _flow(user=fs.scope(state=SessionState))
    s = flow.session("s1", user="alice", store=mem)
    s.patch_state(mode="agent")
    s.inc_state(turns=2)
    s.user.patch_state(mode="x")
    history = s.history("session", limit=20)
    assert [(h.version, h.operation) for h in history] == [(2, "increment"), (1, "patch")]
    assert history[0].state == {"mode": "agent", "turns": 2} and history[0].ts > 0
    assert [h.state["mode"] for h in s.history("user")] == ["x"]
    assert len(s.history(limit=1)) == 1
    flow.run("search", {"q": "a"}, session="s1", store=mem)
    assert s.history("session", resource="search_cache")[0].operation == "set_record"
    with pytest.raises(ValueError):
        s.history("request")


# ---------------------------------------------------------------------------- client data

def test_client_data_functions_see_only_their_own_scope_and_failures_are_reported_by_name(mem):
    class Prefs(BaseModel):
        theme: str = "light"

    seen = {}

    def spy(ctx):
        seen["attrs"] = sorted(a for a in dir(ctx) if not a.startswith("_"))
        seen["resources"] = sorted(ctx.resources)
        return ctx.state.turns

    prefs = fs.define_resource(state=Prefs, writable=True,
                               client_data=lambda state: {"theme": state.theme})
    broken = fs.define_resource(state=Prefs, client_data=lambda state: state.missing)
    flow = _flow(session=fs.scope(state=SessionState, client_data={
                     "turns": spy,
                     "mode": lambda ctx: ctx.state.__dict__["x"],
                     "odd": lambda ctx: object(),
                     "nan": lambda ctx: float("nan"),
                     "ok": lambda ctx: ctx.id}),
                 user=fs.scope(resources={"prefs": prefs, "broken": broken},
                               client_data={"theme": lambda ctx: ctx.resources.prefs.state.theme}))
    s = flow.session("s1", user="alice", store=mem)
    s.user.resources["prefs"].patch_state(theme="dark")
    data = s.client_data()
    assert data["session"]["turns"] == 0
    assert data["session"]["mode"] == {"error": "mode: KeyError: 'x'"}
    assert data["session"]["odd"]["error"].startswith("odd: PydanticSerializationError: ")
    assert data["session"]["nan"]["error"].startswith("nan: ValidationError: client data 'nan'")
    assert data["session"]["ok"] == "s1"
    assert data["user"] == {"theme": "dark"} and data["project"] == {}
    assert seen["attrs"] == ["id", "resources", "scope", "state"]
    assert seen["resources"] == ["search_cache"]  # its own scope's resources only
    snap = s.snapshot()
    assert snap["resources"]["user"]["prefs"] == {"client_data": {"theme": "dark"}}
    assert snap["resources"]["user"]["broken"]["client_data"]["error"].startswith(
        "broken: AttributeError:")
    assert snap["resources"]["session"] == {}  # search_cache has no client_data


def test_a_collections_client_data_is_given_per_key(mem):
    class File(BaseModel):
        size: int = 0

    files = fs.define_resource_collection(pattern="files/*", state=File,
                                          client_data=lambda state: state.size)
    flow = _flow(session=fs.scope(state=SessionState, resources={"files": files}))
    s = flow.session("s1", user="alice", store=mem)
    s.resources["files"].create("files/a.txt", {"size": 3})
    s.resources["files"].create("files/b.txt", {"size": 5})
    assert s.snapshot()["resources"]["session"]["files"] == {
        "client_data": {"files/a.txt": 3, "files/b.txt": 5}}


def test_run_block_refuses_a_stranger_whose_field_type_differs(mem):
    class TurnsText(BaseModel):
        turns: str = ""

    s = _flow().session("s1", user="alice", store=mem)
    stranger = fs.handler(lambda x, ctx: x, name="stranger", session_state=TurnsText)
    with pytest.raises(fs.StateSchemaConflictError, match="'turns' is declared as int by "
                       "flow 'sessions' and as str by handler 'stranger'"):
        s.run_block(stranger, 1)


# ---------------------------------------------------- a session checked once (docs/decisions.md)

def _give_s1_to_bob(store, how):
    """Make ``bob`` the owner of session s1 through ``store``, by one of its write paths."""
    meta = {"user": "bob", "flow": "sessions", "created_at": 1.0}
    current = store.read("session", "s1", "$meta")
    if how == "write":
        store.write("session", "s1", "$meta", meta)
    elif how == "write_expected":  # SQLite's one-statement path
        store.write("session", "s1", "$meta", meta, expected=current.version)
    elif how == "update":
        store.update("session", "s1", "$meta", lambda record: Change(state=meta))
    elif how == "restore":
        store.restore(current._replace(state=meta, version=current.version + 1), [], replace=True)
    elif how == "restore_many":
        store.restore_many([(current._replace(state=meta), [])], replace=True)
    elif how == "purge":  # deleted, then bob's run starts the session afresh
        store.purge("session", ["s1"])
        assert _flow().run("turn", 1, user="bob", session="s1", store=store).ok
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["write", "write_expected", "update", "restore", "restore_many",
                                 "purge"])
def test_a_run_sees_its_sessions_owner_changed_through_the_same_store(store, how):
    flow = _flow()
    for _ in range(2):  # the first creates the session; the second's check is remembered
        assert flow.run("turn", 1, user="alice", session="s1", store=store).ok
    _give_s1_to_bob(store, how)
    with pytest.raises(fs.AccessDeniedError, match="belongs to user 'bob', not 'alice'"):
        flow.run("turn", 1, user="alice", session="s1", store=store)
    assert flow.run("turn", 1, session="s1", store=store).user == "bob"
    assert flow.run("turn", 1, user="bob", session="s1", store=store).ok


def test_a_run_sees_its_sessions_owner_changed_through_another_store_object(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    flow = _flow()
    with fs.open_store(url) as mine, fs.open_store(url) as other:
        for _ in range(2):
            assert flow.run("turn", 1, user="alice", session="s1", store=mine).ok
        _give_s1_to_bob(other, "write")
        with pytest.raises(fs.AccessDeniedError, match="belongs to user 'bob'"):
            flow.run("turn", 1, user="alice", session="s1", store=mine)
        other.purge("session", ["s1"])  # gone: alice's next run starts it as hers again
        assert flow.run("turn", 1, user="alice", session="s1", store=mine).ok
        assert mine.read("session", "s1", "$meta").state["user"] == "alice"


def test_a_run_sees_its_sessions_owner_changed_by_another_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'procs.db'}"
    flow = _flow()
    script = ("import sys, flowstate_jupyter as fs\n"
              "with fs.open_store(sys.argv[1]) as store:\n"
              "    store.write('session', 's1', '$meta', "
              "{'user': 'bob', 'flow': 'sessions', 'created_at': 1.0})\n")
    with fs.open_store(url) as store:
        for _ in range(2):
            assert flow.run("turn", 1, user="alice", session="s1", store=store).ok
        subprocess.run([sys.executable, "-c", script, url], check=True, timeout=60)
        with pytest.raises(fs.AccessDeniedError, match="belongs to user 'bob'"):
            flow.run("turn", 1, user="alice", session="s1", store=store)


def test_a_run_in_a_session_already_checked_does_not_read_the_session_record(tmp_path):
    flow = _flow()
    with fs.open_store(f"sqlite:///{tmp_path / 'reads.db'}") as store:
        for _ in range(2):  # the first creates the session; the second's check is remembered
            flow.run("turn", 1, user="alice", session="s1", store=store)
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        flow.run("turn", 1, user="alice", session="s1", store=store)
        reads = [s for s in statements if s.startswith("SELECT") and "'$meta'" in s]
        assert reads == [] and "PRAGMA data_version" in statements
        with fs.open_store(store.url) as other:  # any commit by another connection
            other.write("project", "default", "", {"n": 1})
        statements.clear()
        flow.run("turn", 1, user="alice", session="s1", store=store)
        assert [s for s in statements if s.startswith("SELECT") and "'$meta'" in s]


def test_sessions_each_checked_once_cost_no_extra_statement(tmp_path):
    # many sessions, each used once by this store object (made elsewhere): a read each, no token
    flow = _flow()
    url = f"sqlite:///{tmp_path / 'once.db'}"
    with fs.open_store(url) as elsewhere:
        for i in range(3):
            flow.session(f"s{i}", user="alice", store=elsewhere)
    with fs.open_store(url) as store:
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        for i in range(3):
            assert flow.run("turn", 1, user="alice", session=f"s{i}", store=store).ok
        assert "PRAGMA data_version" not in statements
        assert sum(s.startswith("SELECT") and "'$meta'" in s for s in statements) == 3
