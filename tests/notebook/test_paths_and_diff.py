"""``%state`` paths (``notebook/paths.py``) and field-level diffs (``diff.py``)."""

from __future__ import annotations

import pytest

from flowstate_jupyter.model.diff import MISSING, FieldChange, diff, format_diff
from flowstate_jupyter.notebook.paths import PathError, StatePath, parse_path

# -- parse_path -----------------------------------------------------------------------------------

PATHS = [
    ("session.mode", StatePath("session", None, None, ("mode",), "session.mode")),
    ("mode", StatePath("session", None, None, ("mode",), "mode")),
    ("message_count", StatePath("session", None, None, ("message_count",), "message_count")),
    ("user", StatePath("user", None, None, (), "user")),
    ("project.settings.model", StatePath("project", None, None, ("settings", "model"),
                                         "project.settings.model")),
    ("request.trace", StatePath("request", None, None, ("trace",), "request.trace")),
    ("session.notes.0.title", StatePath("session", None, None, ("notes", "0", "title"),
                                        "session.notes.0.title")),
    ("session.resources.plan", StatePath("session", "plan", None, (), "session.resources.plan")),
    ("resources.plan.steps", StatePath("session", "plan", None, ("steps",),
                                       "resources.plan.steps")),
    ("user.resources.preferences.theme", StatePath("user", "preferences", None, ("theme",),
                                                   "user.resources.preferences.theme")),
    ("session.resources.files[docs/a.md].size",
     StatePath("session", "files", "docs/a.md", ("size",),
               "session.resources.files[docs/a.md].size")),
    ("project.resources.files[v1.2/notes.txt]",
     StatePath("project", "files", "v1.2/notes.txt", (),
               "project.resources.files[v1.2/notes.txt]")),
    ("session.resources.files[a[b]].meta.tags",
     StatePath("session", "files", "a[b]", ("meta", "tags"),
               "session.resources.files[a[b]].meta.tags")),
    ("  session.mode  ", StatePath("session", None, None, ("mode",), "session.mode")),
]


@pytest.mark.parametrize("text,expected", PATHS, ids=[p[0].strip() for p in PATHS])
def test_parse_path_reads_every_form(text, expected):
    assert parse_path(text) == expected


def test_a_path_label_is_its_text_or_its_scope():
    assert parse_path("user.resources.preferences").label == "user.resources.preferences"
    assert StatePath("project").label == "project"


ERRORS = [
    ("", "a path is needed"),
    ("   ", "a path is needed"),
    (None, "a path is needed"),
    ("session..mode", "empty segment"),
    ("session.mode.", "empty segment"),
    (".mode", "empty segment"),
    ("session.a]b", "unbalanced ']'"),
    ("session.resources.files[a.md", "unclosed '['"),
    ("session.resources", "names no resource"),
    ("resources", "names no resource"),
    ("session.resources.files[a]x", "write a collection key as NAME[KEY]"),
    ("session.resources.files[]", "empty collection key"),
    ("session.mode[0]", "brackets are only for collection keys"),
    ("session.resources.files[a].tags[0]", "brackets are only for collection keys"),
]


@pytest.mark.parametrize("text,message", ERRORS, ids=[repr(e[0]) for e in ERRORS])
def test_parse_path_refuses_bad_paths_with_a_hint(text, message):
    with pytest.raises(PathError) as info:
        parse_path(text)
    text_of_error = str(info.value)
    assert message in text_of_error
    assert "session.mode" in text_of_error  # every message shows what a path looks like
    assert "\n" not in text_of_error
    assert isinstance(info.value, ValueError)


# -- diff -----------------------------------------------------------------------------------------

def test_equal_states_have_no_differences():
    state = {"mode": "chat", "steps": [1, {"a": None}], "n": 1.5}
    assert diff(state, {**state}) == []
    assert format_diff([]) == "(no differences)"


def test_diff_reports_changed_added_and_removed_fields_in_field_order():
    old = {"mode": "chat", "count": 1, "gone": [1]}
    new = {"mode": "agent", "count": 1, "added": {"x": 1}}
    changes = diff(old, new)
    assert [(c.path, c.kind) for c in changes] == [
        (("mode",), "changed"), (("gone",), "removed"), (("added",), "added")]
    assert changes[1].new is MISSING and changes[2].old is MISSING
    assert format_diff(changes).splitlines() == [
        '~ mode: "chat" -> "agent"',
        "- gone (was [1])",
        '+ added = {"x": 1}',
    ]


def test_diff_walks_nested_objects_and_equal_length_lists():
    old = {"plan": {"steps": ["a", "b", "c"], "owner": {"name": "Ada"}}}
    new = {"plan": {"steps": ["a", "B", "c"], "owner": {"name": "Bo"}}}
    assert format_diff(diff(old, new)).splitlines() == [
        '~ plan.steps[1]: "b" -> "B"',
        '~ plan.owner.name: "Ada" -> "Bo"',
    ]


def test_a_list_that_grew_or_shrank_is_one_change():
    changes = diff({"tags": ["a"]}, {"tags": ["a", "b"]})
    assert changes == [FieldChange(("tags",), ["a"], ["a", "b"])]
    assert str(changes[0]) == '~ tags: ["a"] -> ["a", "b"]'


def test_bool_and_number_are_different_values():
    assert format_diff(diff({"flag": True}, {"flag": 1})) == "~ flag: true -> 1"
    assert diff({"flag": False}, {"flag": False}) == []


def test_a_whole_state_that_is_not_an_object_is_named_as_such():
    assert format_diff(diff([1], [1, 2])) == "~ (whole state): [1] -> [1, 2]"
    assert format_diff(diff(None, {"a": 1})) == '~ (whole state): null -> {"a": 1}'


def test_long_values_are_shortened_and_unicode_stays_readable():
    line = str(diff({"text": "x" * 500}, {"text": "é"})[0])
    assert line.startswith('~ text: "xxx') and line.endswith('... -> "é"')
    assert len(line) < 120


def test_diff_keys_that_are_not_identifiers_stay_unambiguous():
    line = format_diff(diff({"meta": {"my key": 1}}, {"meta": {"my key": 2}}))
    assert line == "~ meta['my key']: 1 -> 2"
