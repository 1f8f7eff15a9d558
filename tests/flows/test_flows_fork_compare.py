"""``session.fork`` and ``fs.compare`` (docs/guide.md, 'Fork and compare sessions').

A fork copies the session state at one state version and the session's resources and collection
instances as they were at that version's time, from the records' history; it writes nothing when
the history it needs is no longer kept. ``compare`` lists exactly the fields that differ.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import pytest
from _helpers import run_python
from pydantic import BaseModel, Field

import flowstate_jupyter as fs
from flowstate_jupyter.model.diff import MISSING, FieldChange


class SessionState(BaseModel):
    mode: Literal["chat", "agent"] = "chat"
    count: int = 0


class Plan(BaseModel):
    steps: list[str] = Field(default_factory=list)


class FileMeta(BaseModel):
    size: int = 0


class Prefs(BaseModel):
    theme: str = "light"


def make_flow() -> fs.Flow:
    plan = fs.define_resource(state=Plan, writable=True, client_data=lambda s: len(s.steps))
    files = fs.define_resource_collection(pattern="files/**", state=FileMeta)
    prefs = fs.define_resource(state=Prefs, writable=True)

    @fs.handler
    def step(value, ctx):
        ctx.session.inc_state(count=1)
        ctx.session.resources.plan.push_state("steps", f"run {ctx.session.state.count}")
        return value

    return fs.define_flow(
        kind="forky", actions={"step": step},
        session=fs.scope(state=SessionState, resources={"plan": plan, "files": files},
                         client_data={"mode": lambda c: c.state.mode,
                                      "count": lambda c: c.state.count}),
        user=fs.scope(resources={"prefs": prefs},
                      client_data={"theme": lambda c: c.resources.prefs.state.theme}))


@pytest.fixture
def flow():
    return make_flow()


def fingerprint(store) -> dict:
    """Every record (with version, state, content, tombstone), its history and the change log."""
    records = {}
    for record in store.list(include_deleted=True):
        key = (record.scope, record.scope_id, record.name)
        records[key] = (record.version, json.dumps(record.state, sort_keys=True),
                        record.content, record.deleted,
                        [(e.version, e.operation) for e in store.history(*key)])
    return {"records": records, "changes": len(store.changes())}


def build_history(flow, store):
    """Session s1 of alice: resources change, then a state version is written, three times.

    plan ["a"] with content "draft 1", files/a.md size 1  -> v1 mode=agent
    plan ["a", "b"], files/b.md size 2, files/a.md deleted -> v2 count=1
                                                          -> v3 count=2
    """
    s = flow.session("s1", user="alice", store=store)
    s.resources.plan.push_state("steps", "a")
    s.resources.plan.write_content("draft 1")
    s.resources.files.create("files/a.md", {"size": 1})
    s.patch_state(mode="agent")
    s.resources.plan.push_state("steps", "b")
    s.resources.files.create("files/b.md", {"size": 2})
    s.resources.files.delete("files/a.md")
    s.inc_state(count=1)
    s.inc_state(count=1)
    assert s.version == 3
    return s


@pytest.fixture
def mem_small():
    """A memory store that keeps only 4 versions of each record."""
    store = fs.open_store("memory://", history_limit=4)
    yield store
    store.close()


# -- fork ------------------------------------------------------------------------------------------

def test_fork_at_a_past_version_copies_state_and_resources_as_of_that_version(flow, backend):
    store = backend.open()  # memory, SQLite and PostgreSQL
    s = build_history(flow, store)
    before = fingerprint(store)
    at_1 = s.fork("at1", at_version=1)
    assert isinstance(at_1, fs.Session) and at_1.flow is flow and at_1.user.id == "alice"
    assert at_1.parent == ("s1", 1)
    assert at_1.state_dict() == {"mode": "agent", "count": 0}
    assert at_1.resources.plan.state.steps == ["a"]
    assert at_1.resources.plan.read_content_raw() == "draft 1"
    assert at_1.resources.files.list() == ["files/a.md"]
    assert at_1.resources.files.get("files/a.md").state.size == 1

    at_2 = s.fork("at2", at_version=2)
    assert at_2.parent == ("s1", 2)
    assert at_2.state_dict() == {"mode": "agent", "count": 1}
    assert at_2.resources.plan.state.steps == ["a", "b"]
    assert at_2.resources.files.list() == ["files/b.md"]  # a.md was deleted by then

    # the source is exactly as it was; the forks are new sessions with their own versions
    after = fingerprint(store)
    assert {k: v for k, v in after["records"].items() if k[1] == "s1"} == before["records"]
    assert at_1.version == 1 and at_1.history(limit=None)[0].operation == "fork"


def test_fork_at_version_zero_starts_before_the_first_state_write(flow, store):
    s = build_history(flow, store)
    zero = s.fork("zero", at_version=0)
    assert zero.parent == ("s1", 0)
    assert zero.state_dict() == {"mode": "chat", "count": 0} and zero.version == 0
    # what was written before the first state version is there
    assert zero.resources.plan.state.steps == ["a"]
    assert zero.resources.files.list() == ["files/a.md"]


def test_fork_of_now_is_equal_to_its_source_and_keeps_its_user_and_project(flow, store):
    s = build_history(flow, store)
    s.user.resources.prefs.patch_state(theme="dark")
    forked = s.fork()
    assert re.fullmatch(r"s-[0-9a-f]+", forked.id)
    assert forked.parent == ("s1", 3)
    comparison = fs.compare(s, forked)
    assert comparison.equal and not comparison
    assert comparison.state == comparison.resources == comparison.client_data == []
    # user and project scopes are shared, not copied
    forked.user.resources.prefs.patch_state(theme="light")
    assert s.user.resources.prefs.state.theme == "light"
    assert forked.project.id == s.project.id


def test_a_fork_is_a_session_of_its_own(flow, store):
    s = build_history(flow, store)
    forked = s.fork("branch", at_version=2)
    result = forked.run("step", {})
    assert result.ok and result.session_id == "branch"
    assert forked.state.count == 2 and s.state.count == 2
    assert forked.resources.plan.state.steps == ["a", "b", "run 2"]
    assert s.resources.plan.state.steps == ["a", "b"]
    grandchild = forked.fork("leaf")
    assert grandchild.parent == ("branch", forked.version)


def test_flow_sessions_shows_each_sessions_parent(flow, store):
    s = build_history(flow, store)
    s.fork("b1", at_version=1).fork("b1a")
    s.fork("b2", at_version=2)
    parents = {item["id"]: item["parent"] for item in flow.sessions(store=store)}
    assert parents == {"s1": None, "b1": ("s1", 1), "b1a": ("b1", 1), "b2": ("s1", 2)}


def test_fork_after_the_state_history_was_pruned_says_so_and_writes_nothing(flow, backend):
    store = backend.open(history_limit=4)
    s = flow.session("s1", user="alice", store=store)
    for _ in range(12):
        s.inc_state(count=1)
    before = fingerprint(store)
    with pytest.raises(fs.HistoryNotKeptError) as info:
        s.fork("old", at_version=2)
    message = str(info.value)
    assert "state version 2 is no longer kept" in message
    assert "history_limit" in message and "at_version=None" in message
    assert isinstance(info.value, LookupError)
    assert fingerprint(store) == before
    assert [item["id"] for item in flow.sessions(store=store)] == ["s1"]
    kept = min(e.version for e in s.history(limit=None))
    assert s.fork("recent", at_version=kept).state.count == kept  # a kept version still works


def test_fork_when_a_resources_old_version_was_pruned_names_the_resource(flow, mem_small):
    s = flow.session("s1", user="alice", store=mem_small)
    s.patch_state(mode="agent")  # state version 1, then the plan changes many times
    for n in range(10):
        s.resources.plan.push_state("steps", str(n))
    s.inc_state(count=1)
    before = fingerprint(mem_small)
    with pytest.raises(fs.HistoryNotKeptError, match=r"resource 'plan'.*no longer kept"):
        s.fork("old", at_version=1)
    assert fingerprint(mem_small) == before
    assert s.fork("now").resources.plan.state.steps == [str(n) for n in range(10)]


def test_fork_before_a_content_rewrite_says_content_is_not_kept(flow, store):
    s = build_history(flow, store)
    s.resources.plan.write_content("draft 2")
    before = fingerprint(store)
    with pytest.raises(fs.HistoryNotKeptError, match="content was rewritten"):
        s.fork("old", at_version=2)
    assert fingerprint(store) == before
    s.inc_state(count=1)  # a state version after the content change can be forked
    assert s.fork("new", at_version=4).resources.plan.read_content_raw() == "draft 2"


@pytest.mark.parametrize("version", [-1, 4, "2", 1.0, True])
def test_fork_refuses_a_version_the_session_never_had(flow, store, version):
    s = build_history(flow, store)
    before = fingerprint(store)
    with pytest.raises(ValueError, match="at_version must be a state version from 0 to 3"):
        s.fork("x", at_version=version)
    assert fingerprint(store) == before


def test_fork_refuses_an_id_that_is_taken_or_invalid(flow, store):
    s = build_history(flow, store)
    flow.session("taken", user="bob", store=store)
    before = fingerprint(store)
    for taken in ("taken", "s1"):
        with pytest.raises(fs.ResourceAlreadyExistsError, match=f"session '{taken}' exists"):
            s.fork(taken)
    with pytest.raises(fs.InvalidIdError):
        s.fork("no spaces allowed")
    assert fingerprint(store) == before


def test_a_forks_parent_is_seen_from_another_process(flow, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = fs.open_store(url)
    s = build_history(flow, store)
    s.fork("child", at_version=2)
    store.close()
    out = run_python(
        "import sys, json, flowstate_jupyter as fs\n"
        "store = fs.open_store(sys.argv[1])\n"
        "@fs.handler\n"
        "def noop(value):\n"
        "    return value\n"
        "flow = fs.define_flow(kind='forky', actions={'noop': noop})\n"
        "child = flow.session('child', store=store)\n"
        "tree = {i['id']: i['parent'] for i in flow.sessions(store=store)}\n"
        "print(json.dumps({'parent': child.parent, 'sessions': tree,\n"
        "                  'state': child.state_dict()}))\n",
        url)
    seen = json.loads(out.stdout)
    assert seen["parent"] == ["s1", 2]
    assert seen["sessions"] == {"s1": None, "child": ["s1", 2]}
    assert seen["state"] == {"mode": "agent", "count": 1}


# -- compare ---------------------------------------------------------------------------------------

def test_compare_lists_exactly_the_fields_that_differ(flow, store):
    s = build_history(flow, store)
    old = s.fork("old", at_version=1)
    comparison = fs.compare(s, old)
    assert (comparison.a, comparison.b, comparison.versions) == ("s1", "old", (3, 1))
    assert comparison.text().startswith("compare session s1 (v3) with old (v1)")
    assert comparison.state == [FieldChange(("count",), 2, 0)]
    assert comparison.resources == [
        FieldChange(("plan", "state", "steps"), ["a", "b"], ["a"]),
        FieldChange(("files", "files/b.md"), {"state": {"size": 2}}, MISSING),
        FieldChange(("files", "files/a.md"), MISSING, {"state": {"size": 1}}),
    ]
    assert comparison.client_data == [FieldChange(("session.count",), 2, 0),
                                      FieldChange(("session.resources.plan",), 2, 1)]
    assert comparison and not comparison.equal


def test_compare_sees_content_collections_and_other_users(flow, store):
    a = flow.session("a", user="alice", store=store)
    b = flow.session("b", user="bob", store=store)
    for s in (a, b):
        s.resources.files.create("files/x", {"size": 3})
        s.resources.plan.push_state("steps", "same")
    a.resources.plan.write_content("alpha")
    b.resources.files.get("files/x").write_content("x text")
    b.user.resources.prefs.patch_state(theme="dark")
    comparison = fs.compare(a, b)
    assert comparison.state == []
    assert comparison.resources == [
        FieldChange(("plan", "content"), "alpha", MISSING),
        FieldChange(("files", "files/x", "content"), MISSING, "x text"),
    ]
    assert comparison.client_data == [FieldChange(("user.theme",), "light", "dark")]


def test_compare_of_equal_sessions_is_empty(flow, store):
    a = flow.session("a", user="alice", store=store)
    b = flow.session("b", user="alice", store=store)
    for s in (a, b):
        s.run("step", {})
        s.patch_state(mode="agent")
        s.resources.files.create("files/k", {"size": 7})
    comparison = fs.compare(a, b)
    assert (comparison.state, comparison.resources, comparison.client_data) == ([], [], [])
    assert comparison.equal and "state: equal" in comparison.text()
    assert fs.compare(a, a).equal


def test_compare_shows_side_by_side_with_differing_rows_marked_in_theme_colours(flow, store):
    s = build_history(flow, store)
    comparison = fs.compare(s, s.fork("old", at_version=1))
    html = comparison._repr_html_()
    rows = re.findall(r"<tr( class=\"fs-cmp-diff\")?><td>(≠?)</td><td>([^<]*)</td>", html)
    marked = {key for cls, mark, key in rows if cls}
    assert marked == {"count", "plan", "files[&#x27;files/b.md&#x27;]",
                      "files[&#x27;files/a.md&#x27;]", "session.count", "session.resources.plan"}
    assert all(bool(cls) == bool(mark) for cls, mark, _ in rows)
    assert {"mode", "session.mode"} <= {key for cls, _, key in rows if not cls}
    assert "var(--jp-content-font-color1)" in html
    assert not re.search(r"#[0-9a-fA-F]{3,8}\b|rgba?\(|hsla?\(", html), "a hard-coded colour"
    text = repr(comparison)
    assert re.search(r"^\s+\* count\s+2\s+0$", text, re.MULTILINE), text
    assert re.search(r"^\s+ {2}mode\s+\"agent\"\s+\"agent\"$", text, re.MULTILINE), text
    assert "~ plan.state.steps: [\"a\", \"b\"] -> [\"a\"]" in text


def test_compare_changes_nothing_not_even_lru_order(store):
    files = fs.define_resource_collection(pattern="*", state=FileMeta, max_instances=2,
                                          eviction="lru")

    @fs.handler
    def noop(value):
        return value

    flow = fs.define_flow(kind="lru", actions={"noop": noop},
                          session=fs.scope(resources={"files": files}))
    a = flow.session("a", user="alice", store=store)
    b = flow.session("b", user="alice", store=store)
    a.resources.files.create("one", {"size": 1})
    b.resources.files.create("one", {"size": 2})

    def seen() -> list:
        return [(r.scope_id, r.name, r.version, r.accessed_at, r.updated_at)
                for r in store.list(include_deleted=True)]

    before, log = seen(), fingerprint(store)
    assert fs.compare(a, b).resources == [FieldChange(("files", "one", "state", "size"), 1, 2)]
    assert seen() == before and fingerprint(store) == log
