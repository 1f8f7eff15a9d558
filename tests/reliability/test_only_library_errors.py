"""The raw exceptions issue 13 §7 found, each now a library error that says what, where and what
to do, with state, version, history and change log unchanged (the fuzz tests beside this file
try every entry point; these are the reported cases, by name)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from _helpers import fingerprint
from pydantic import BaseModel

import flowstate_jupyter as fs
import flowstate_jupyter.windmill as wm


class Metrics(BaseModel):
    ratio: float = 0.5
    notes: dict[str, int] = {}


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/x.db"
    s = fs.open_store(url)
    yield s
    s.close()


@pytest.fixture
def scope(store: Any) -> Any:
    handle = fs.ScopeHandle(store, "session", "s1", state=Metrics, resources={
        "plan": fs.define_resource(writable=True),
        "files": fs.define_resource_collection(pattern="files/**")})
    handle.patch_state(ratio=1.5, notes={"a": 1})
    handle.resources.plan.write_content("kept")
    handle.resources.files.create("files/a.md")
    return handle


def refused(store: Any, error: type, words: list[str], call: Any) -> None:
    before = fingerprint(store)
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"
    assert fingerprint(store) == before


def test_lone_surrogates_in_content_keys_and_dict_keys_are_validation_errors(store, scope):
    refused(store, fs.ValidationError, ["resource 'plan'", "content", "lone surrogate"],
            lambda: scope.resources.plan.write_content("half \ud800 a character"))
    refused(store, fs.InvalidIdError, ["collection 'files'", "lone surrogates"],
            lambda: scope.resources.files.create("files/\ud800.md"))
    refused(store, fs.ValidationError, ["session 's1'", "notes", "lone surrogate"],
            lambda: scope.patch_state(notes={"\ud800": 1}))
    refused(store, fs.ValidationError, ["record key", "notes", "lone surrogate"],
            lambda: scope.set_state_record("notes", "\udfff", 2))
    refused(store, fs.InvalidIdError, ["lone surrogates"],
            lambda: scope.resources.files.list("files/\ud800"))
    assert scope.resources.plan.read_content() == "kept"


def test_lone_surrogates_in_windmill_paths_are_invalid_ids(store, monkeypatch):
    monkeypatch.setenv("FLOWSTATE_USER", "alice")
    with wm.use_store(store):
        refused(store, fs.InvalidIdError, ["'f/team/\\ud800'"],
                lambda: wm.set_state(1, "f/team/\ud800"))
        refused(store, fs.InvalidIdError, ["resource path"],
                lambda: wm.set_resource("f/team/\udfff", {"a": 1}))


def test_an_increment_too_large_for_a_float_is_refused(store, scope):
    refused(store, fs.ValidationError, ["ratio", "overflows"],
            lambda: scope.inc_state(ratio=10**400))
    assert scope.state.ratio == 1.5


def test_a_value_nested_too_deeply_is_refused_before_pydantic_or_json_see_it(store, scope):
    deep: Any = 1
    for _ in range(10_000):
        deep = [deep]
    refused(store, fs.ValidationError, ["200 levels"], lambda: scope.patch_state(notes=deep))
    free = fs.ScopeHandle(store, "session", "free")
    refused(store, fs.ValidationError, ["200 levels"], lambda: free.patch_state(data=deep))


@pytest.mark.parametrize("query,words", [
    ("timeout=nan", ["timeout", "finite"]), ("timeout=-1", ["timeout"]),
    ("poll_interval=0", ["> 0"]),
    ("history_limit=0", ["history_limit", "positive"]), ("max_state_bytes=lots", ["max_state"]),
    ("durability=eventually", ["durability", "'full'"]), ("colour=blue", ["colour"]),
])
def test_a_bad_store_url_option_is_a_store_error(tmp_path, query, words):
    with pytest.raises(fs.StoreError) as info:
        fs.open_store(f"sqlite:///{tmp_path}/o.db?{query}")
    for word in words:
        assert word in str(info.value)
    assert not os.path.exists(tmp_path / "o.db")
