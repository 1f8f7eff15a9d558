"""Resources and collections (docs/concepts.md, 'Resources and collections'): versions, tombstones,
content, caps, eviction, hooks."""

from __future__ import annotations

import threading

import pytest
from pydantic import BaseModel

import flowstate_jupyter as fs


class Plan(BaseModel):
    goal: str = ""
    steps: list[str] = []
    done: int = 0


class FileMeta(BaseModel):
    size: int = 0
    title: str = ""


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = fs.open_store("memory://" if request.param == "memory"
                      else f"sqlite:///{tmp_path}/res.db")
    yield s
    s.close()


def _scope(store, **resources):
    return fs.ScopeHandle(store, "session", "s1", resources=resources)


def test_resource_starts_at_defaults_and_its_first_write_is_version_one(store):
    plan = _scope(store, plan=fs.define_resource(Plan, writable=True)).resources["plan"]
    assert (plan.version, plan.state) == (0, Plan())
    assert plan.patch_state(goal="ship") is True
    assert plan.version == 1
    assert plan.patch_state(goal="ship") is False
    assert plan.version == 1


def test_resources_are_reached_by_key_and_by_attribute(store):
    res = _scope(store, plan=fs.define_resource(Plan, writable=True)).resources
    assert res["plan"] is res.plan
    with pytest.raises(fs.ResourceNotFoundError, match="defined: plan"):
        res["nope"]
    with pytest.raises(AttributeError):
        _ = res.nope


def test_resource_default_overlays_the_schema_defaults(store):
    plan = _scope(store, plan=fs.define_resource(
        Plan, writable=True, default={"goal": "draft"})).resources.plan
    assert plan.state.goal == "draft"
    plan.inc_state(done=1)
    assert (plan.state.goal, plan.state.done) == ("draft", 1)


def test_every_resource_operation_works(store):
    plan = _scope(store, plan=fs.define_resource(Plan, writable=True)).resources.plan
    plan.set_state(Plan(goal="g"))
    plan.inc_state(done=2)
    plan.push_state("steps", "a")
    plan.update_state(lambda s: {**s.model_dump(), "steps": [*s.steps, "b"]})
    plan.update_state(lambda s: s.model_copy(update={"goal": "h"}))
    assert plan.state == Plan(goal="h", steps=["a", "b"], done=2)
    assert plan.version == 5


def test_read_only_resource_refuses_every_write_and_stores_nothing(store):
    ro = _scope(store, plan=fs.define_resource(Plan)).resources.plan
    for write in (lambda: ro.patch_state(goal="x"), lambda: ro.set_state({}),
                  lambda: ro.inc_state(done=1), lambda: ro.push_state("steps", "x"),
                  lambda: ro.update_state(lambda s: s), lambda: ro.write_content("x"),
                  lambda: ro.delete()):
        with pytest.raises(fs.ReadOnlyResourceError, match="Resource 'plan' is read-only"):
            write()
    assert store.list("session", "s1", include_deleted=True) == []
    assert store.changes() == []


def test_content_is_stored_beside_state_and_empty_string_is_content(store):
    plan = _scope(store, plan=fs.define_resource(Plan, writable=True)).resources.plan
    assert plan.read_content_raw() is None
    assert plan.write_content("") is True
    assert plan.read_content_raw() == ""
    assert plan.write_content("") is False
    plan.write_content("# Plan")
    assert plan.read_content() == "# Plan"
    assert plan.version == 2


def test_content_defaults_come_from_content_or_content_file_and_render_applies(store, tmp_path):
    path = tmp_path / "tpl.md"
    path.write_text("from file", encoding="utf-8")
    res = _scope(store,
                 a=fs.define_resource(Plan, content="static"),
                 b=fs.define_resource(Plan, content_file=str(path)),
                 c=fs.define_resource(Plan, writable=True, default={"goal": "g"},
                                      content="body",
                                      render=lambda state, text: f"{state.goal}: {text}")).resources
    assert res.a.read_content() == "static"
    assert res.b.read_content() == "from file"
    assert res.c.read_content() == "g: body"
    assert res.c.read_content_raw() == "body"


def test_read_content_is_none_without_content_and_render_sees_only_content(store):
    seen = []

    def render(state, text):
        seen.append(text)
        return f"{state.goal}: {text}"

    plan = _scope(store, plan=fs.define_resource(Plan, writable=True, default={"goal": "g"},
                                                 render=render)).resources.plan
    assert plan.read_content() is None  # None is no content; render is not asked
    assert seen == []
    plan.write_content("")
    assert plan.read_content() == "g: "  # "" is content, so it is rendered
    plan.write_content(None)
    assert plan.read_content() is None
    assert seen == [""]


def test_delete_leaves_a_tombstone_and_versions_are_never_reused(store):
    res = _scope(store, plan=fs.define_resource(Plan, writable=True)).resources
    res.plan.patch_state(goal="a")
    assert res.plan.delete() is True
    assert res.plan.version == 2
    assert store.read("session", "s1", "plan").deleted
    assert res.plan.delete() is False
    res.plan.patch_state(goal="b")  # this handle deleted it itself: writing re-creates it
    assert res.plan.version == 3
    assert res.plan.state.goal == "b"


def test_writing_a_resource_another_writer_deleted_raises_resource_deleted(store):
    mine = _scope(store, plan=fs.define_resource(Plan, writable=True)).resources.plan
    theirs = _scope(store, plan=fs.define_resource(Plan, writable=True)).resources.plan
    mine.patch_state(goal="a")
    theirs.delete()
    before = store.read("session", "s1", "plan")
    with pytest.raises(fs.ResourceDeletedError, match="deleted by another writer"):
        mine.patch_state(goal="b")
    assert store.read("session", "s1", "plan") == before


def test_resource_events_say_created_updated_and_deleted(store):
    events = []
    store.subscribe(events.append)
    plan = _scope(store, plan=fs.define_resource(Plan, writable=True)).resources.plan
    plan.patch_state(goal="a")
    plan.patch_state(goal="b")
    plan.delete()
    assert [(e["type"], e["resource"], e["change_type"], e["version"]) for e in events] == [
        ("resource_change", "plan", "created", 1), ("resource_change", "plan", "updated", 2),
        ("resource_change", "plan", "deleted", 3)]
    assert events[1]["delta"] == {"goal": "b"}


def test_invalid_resource_names_are_refused(store):
    for name in ("$meta", "a/b", "", "has space", "a:b"):
        with pytest.raises(fs.InvalidIdError, match="invalid resource name"):
            _scope(store, **{name: fs.define_resource(Plan)})


# -- collections --------------------------------------------------------------------------------

def _files(store, **options):
    definition = fs.define_resource_collection(pattern="files/**", state=FileMeta, **options)
    return _scope(store, files=definition).resources.files


def test_collection_create_get_list_count_and_delete(store):
    files = _files(store)
    files.create("files/a.md", {"size": 3})
    files.create("files/docs/b.md")
    assert files.list() == ["files/a.md", "files/docs/b.md"]
    assert files.list(prefix="files/docs") == ["files/docs/b.md"]
    assert files.count() == 2
    assert files.get("files/a.md").state.size == 3
    assert files.get("files/docs/b.md").version == 1
    assert files.delete("files/a.md") is True
    assert files.delete("files/a.md") is False
    assert files.get_optional("files/a.md") is None
    with pytest.raises(fs.ResourceNotFoundError, match=r"no instance 'files/a\.md'"):
        files.get("files/a.md")
    assert files.list() == ["files/docs/b.md"]


def test_collection_create_twice_raises_already_exists_unless_replace(store):
    files = _files(store)
    files.create("files/a", {"size": 1})
    with pytest.raises(fs.ResourceAlreadyExistsError, match="already exists"):
        files.create("files/a", {"size": 2})
    assert files.get("files/a").state.size == 1
    files.create("files/a", {"size": 2}, replace=True)
    assert files.get("files/a").state.size == 2


def test_collection_recreate_after_delete_continues_the_version_sequence(store):
    files = _files(store)
    files.create("files/a")
    files.delete("files/a")
    assert files.create("files/a").version == 3


def test_collection_get_or_create_and_upsert(store):
    files = _files(store)
    assert files.get_or_create("files/a", {"size": 1}).state.size == 1
    assert files.get_or_create("files/a", {"size": 9}).state.size == 1
    handle = files.upsert("files/b", {"size": 5}, create_only={"title": "new"})
    assert handle.state == FileMeta(size=5, title="new")
    files.upsert("files/b", {"size": 6}, create_only={"title": "ignored"})
    assert files.get("files/b").state == FileMeta(size=6, title="new")


@pytest.mark.parametrize("pattern, good, bad", [
    ("files/**", ["files/a", "files/a/b/c"], ["files", "other/a", "files//a", "files/../x"]),
    ("notes/*", ["notes/a"], ["notes/a/b", "notes"]),
    ("users/[user]/docs/*", ["users/u1/docs/d"], ["users/u1/docs", "users/docs/d/e"]),
    ("*", ["a", "100%_done"], ["a/b"]),
])
def test_collection_keys_must_match_the_pattern(store, pattern, good, bad):
    coll = _scope(store, c=fs.define_resource_collection(pattern=pattern)).resources.c
    for key in good:
        coll.create(key)
    for key in bad:
        with pytest.raises(fs.InvalidIdError):
            coll.create(key)
    assert sorted(coll.list()) == sorted(good)


@pytest.mark.parametrize("pattern", ["", "a//b", "a/../b", "a/b*", "[x]/[x]"])
def test_invalid_collection_patterns_are_refused_at_definition(pattern):
    with pytest.raises(fs.InvalidIdError, match="invalid collection pattern"):
        fs.define_resource_collection(pattern=pattern)


def test_collection_prefix_lookup_treats_percent_and_underscore_literally(store):
    coll = _scope(store, c=fs.define_resource_collection(pattern="*")).resources.c
    for key in ("a%b", "axb", "a_c", "abc"):
        coll.create(key)
    assert coll.list(prefix="a%") == ["a%b"]
    assert coll.list(prefix="a_") == ["a_c"]


def test_collection_cap_without_eviction_refuses_the_create_and_stores_nothing(store):
    files = _files(store, max_instances=2)
    files.create("files/a")
    files.create("files/b")
    changes = len(store.changes())
    with pytest.raises(fs.ValidationError, match=r"full \(2 of 2 instances\)"):
        files.create("files/c")
    assert files.list() == ["files/a", "files/b"]
    assert len(store.changes()) == changes


def test_collection_lru_eviction_removes_the_least_recently_used(store):
    files = _files(store, max_instances=2, eviction="lru")
    files.create("files/a")
    files.create("files/b")
    files.get("files/a")  # a is now more recently used than b
    files.create("files/c")
    assert files.list() == ["files/a", "files/c"]


def test_collection_oldest_eviction_removes_the_earliest_created(store):
    files = _files(store, max_instances=2, eviction="oldest")
    files.create("files/a")
    files.create("files/b")
    files.get("files/a")
    files.create("files/c")
    assert files.list() == ["files/b", "files/c"]


def test_collection_hooks_run_after_create_update_and_delete(store):
    calls = []
    definition = fs.define_resource_collection(
        pattern="files/*", state=FileMeta,
        on_created=lambda key, state: calls.append(("created", key, state.size)),
        on_updated=lambda key, state, prev: calls.append(("updated", key, state.size, prev.size)),
        on_deleted=lambda key: calls.append(("deleted", key)))
    files = _scope(store, files=definition).resources.files
    files.create("files/a", {"size": 1}).inc_state(size=2)
    files.delete("files/a")
    assert calls == [("created", "files/a", 1), ("updated", "files/a", 3, 1),
                     ("deleted", "files/a")]


def test_delete_all_removes_every_resource_of_one_scope_instance_only(store):
    mine = fs.ScopeHandle(store, "session", "s1",
                          resources={"plan": fs.define_resource(Plan, writable=True)})
    other = fs.ScopeHandle(store, "session", "s2",
                           resources={"plan": fs.define_resource(Plan, writable=True)})
    mine.resources.plan.patch_state(goal="a")
    other.resources.plan.patch_state(goal="b")
    assert store.delete_all("session", "s1") == 1
    assert store.list("session", "s1") == []
    assert other.resources.plan.state.goal == "b"


def test_a_refused_create_in_a_full_collection_evicts_nothing(store):
    files = _files(store, max_instances=2, eviction="oldest")
    files.create("files/a")
    files.create("files/b")
    changes = len(store.changes())
    with pytest.raises(fs.ValidationError, match="size"):
        files.create("files/c", {"size": "big"})
    assert files.list() == ["files/a", "files/b"]  # the eviction rolled back with the write
    assert len(store.changes()) == changes


@pytest.mark.parametrize("eviction", ["oldest", "lru", "none"])
def test_a_first_write_that_changes_nothing_creates_nothing_and_evicts_nobody(store, eviction):
    files = _files(store, max_instances=2, eviction=eviction)
    files.create("files/a", {"size": 1})
    files.create("files/b", {"size": 2})
    changes, history = store.changes(), store.history("session", "s1", "files:files/a")
    target = files.instance("files/c")
    assert target.patch_state(size=0) is False  # the defaults: nothing to store
    assert target.inc_state(size=0) is False
    assert files.list() == ["files/a", "files/b"]
    assert files.get("files/a").state.size == 1
    assert store.changes() == changes
    assert store.history("session", "s1", "files:files/a") == history
    assert not target.exists


def test_an_instance_handle_creates_its_record_on_the_first_write_only(store):
    created = []
    definition = fs.define_resource_collection(
        pattern="files/*", state=FileMeta, max_instances=1, eviction="lru",
        on_created=lambda key, state: created.append((key, state.size)))
    files = _scope(store, files=definition).resources.files
    files.create("files/old")
    target = files.instance("files/new")
    with pytest.raises(fs.ValidationError):
        target.patch_state(size="big")
    assert files.list() == ["files/old"]
    assert target.inc_state(size=3) is True
    assert files.list() == ["files/new"]  # room was made by that first write
    assert created == [("files/old", 0), ("files/new", 3)]


@pytest.mark.parametrize("eviction", ["none", "oldest"])
def test_a_collection_cap_holds_when_writers_in_several_connections_create_at_once(
        shared_backend, eviction):
    cap, writers = 3, 8
    stores = [shared_backend.open() for _ in range(writers)]
    collections = [_files(s, max_instances=cap, eviction=eviction) for s in stores]
    barrier = threading.Barrier(writers)
    outcomes: list[str] = []

    def create(i: int) -> None:
        barrier.wait()
        try:
            collections[i].create(f"files/{i}")
            outcomes.append("created")
        except fs.ValidationError:
            outcomes.append("full")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(collections[0].list()) == cap
    assert outcomes.count("created") == (cap if eviction == "none" else writers)
