"""The ``%state``, ``%flow`` and ``%%flow`` magics (DESIGN §11).

Mistakes are one clear ``UsageError`` line; add ``-t`` (``--traceback``) after the magic name to
see the full traceback instead. The store is the source of truth: the magics keep only which
flow and session you look at (``KernelState``).

Magic lines are data (DESIGN §13): IPython's ``$name`` / ``{expr}`` expansion is off
(``no_var_expand``), so ``%state set session.note "{1+1}"`` stores the text ``{1+1}`` and nothing
in a line is ever evaluated. Values are JSON (a bare word such as ``agent`` is taken as a
string). A ``#`` outside JSON strings and brackets, at the start of the line or after a space,
starts a comment that is ignored, so lines copied with their comments work.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Bool
from traitlets.config import Configurable

from ..base.ids import check_id
from ..base.jsonvalues import NOT_JSON_SYNTAX, load_json
from ..base.names import SESSION_META
from ..base.text import short
from ..errors import FlowStateError, ValidationError
from ..flows.bookkeeping import list_runs
from ..flows.forking import meta_parent
from ..handles.resources import CollectionHandle, ResourceHandle
from ..model import html as h
from ..model.display import (
    command_hint,
    event_label,
    flatten_client_view,
    history_rows,
    progress_html,
    progress_text,
    run_html,
    runs_rows,
    version_diff_text,
)
from ..model.schema import check_input_keys, defaults, validate_value
from ._progress import Progress
from .kernel import KernelState, _PlainSession
from .paths import PathError, StatePath, parse_path

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-@:/ ]*")
_OPTION = re.compile(r"(?:^|\s)--(flow|session|user|project|limit|status)(?:=|\s+)(\S+)")
_FLAG = re.compile(r"(?:^|\s)--(side|table)(?=\s|$)")


class Table:
    """A small table that shows as HTML in a notebook and as aligned text elsewhere.

    Rows hold plain values: strings show as text, JSON values as trees (``html.table``);
    ``nowrap`` names columns kept on one line (times, versions).
    """

    def __init__(self, title: str, header: tuple[str, ...], rows: list[tuple], *,
                 subtitle: str = "", nowrap: tuple[int, ...] = ()) -> None:
        self.title, self.header, self.rows = title, header, rows
        self.subtitle, self.nowrap = subtitle, nowrap

    def _repr_html_(self) -> str:
        body = h.table(self.rows, self.header, nowrap=self.nowrap) if self.rows else \
            '<div class="fs-muted">(none)</div>'
        return h.card(self.title, body, self.subtitle)

    def __repr__(self) -> str:
        cells = [[c if isinstance(c, str) else h.preview(c, 120) for c in row]
                 for row in self.rows]
        widths = [max([len(head), *(len(r[i]) for r in cells)])
                  for i, head in enumerate(self.header)]
        lines = [self.title, "  ".join(head.ljust(w) for head, w in zip(self.header, widths))
                 .rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
        return "\n".join(lines) if self.rows else f"{self.title}\n(none)"


class FlowSummary:
    """What ``%%flow`` and ``%flow show`` display: actions, merged scope fields, resources and
    client-data keys (``Flow.describe()``), as HTML and as text."""

    def __init__(self, flow: Any) -> None:
        self.flow = flow

    def _repr_html_(self) -> str:
        return self.flow._repr_html_()

    def __repr__(self) -> str:
        return self.flow.describe()


def _show_flow(flow: Any) -> None:
    """The summary of a flow, then its picture (two outputs: a front end draws each its way)."""
    display(FlowSummary(flow))
    display(flow.graph())


def parse_value(text: str, where: str = "") -> Any:
    """JSON, or a bare word taken as a string; anything else is a UsageError.

    ``where`` (a path such as ``session.mode``) starts the message, so it names the field.
    JSON by the stored-value rules (:func:`~flowstate_jupyter.base.jsonvalues.load_json`): no
    NaN, no lone surrogates, no nesting too deep to handle.
    """
    text = text.strip()
    prefix = f"{where}: " if where else ""
    if not text:
        raise UsageError(f"{prefix}a value is needed (JSON, e.g. 3, \"text\", [1, 2], "
                         f"{{\"a\": 1}})")
    try:
        return load_json(text, where=where or "value")
    except ValidationError as exc:
        if exc.reason != NOT_JSON_SYNTAX:
            raise UsageError(_one_line(exc)) from None
        if _BARE.fullmatch(text) and text not in ("true", "false", "null"):
            return text
        detail = str(exc).rpartition(" is not JSON ")[2]
        raise UsageError(f"{prefix}value {short(text, 60)} is not JSON {detail}; quote "
                         f"strings, e.g. '\"text\"'") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _outside_values(line: str) -> list[bool]:
    """For each character: True when it is outside JSON strings, brackets and braces."""
    mask, depth, in_string, escaped = [], 0, False, False
    for char in line:
        mask.append(depth == 0 and not in_string)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
    return mask


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment``: a ``#`` outside JSON strings and brackets, at
    the start of the line or after whitespace (``"a # b"``, ``[1, "#"]`` and
    ``files[docs/#1]`` keep theirs)."""
    if "#" not in line:
        return line
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(line):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char == "#" and depth == 0 and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def _take_options(line: str) -> tuple[str, dict[str, str], bool]:
    """Pull ``--flow X``-style options and ``-t`` out of a raw line, keeping the rest raw.

    Only options outside JSON values count: ``{"message": "see --user bob"}`` stays intact. A
    trailing ``# comment`` is dropped first.
    """
    line = _strip_comment(line)
    mask = _outside_values(line)
    options: dict[str, str] = {}
    kept, start = [], 0
    for match in _OPTION.finditer(line):
        if not mask[match.start(1) - 2]:  # the "--" sits inside a JSON value
            continue
        options[match.group(1)] = match.group(2)
        kept.append(line[start:match.start()])
        start = match.end()
    rest = " ".join([*kept, line[start:]])
    tokens = rest.split(None, 1)
    traceback = False
    while tokens and tokens[0] in ("-t", "--traceback"):
        traceback = True
        rest = tokens[1] if len(tokens) > 1 else ""
        tokens = rest.split(None, 1)
    return rest.strip(), options, traceback


def _take_flags(line: str) -> tuple[str, set[str]]:
    """Pull the ``--side`` / ``--table`` flags out of a line (outside JSON values)."""
    mask = _outside_values(line)
    flags: set[str] = set()
    kept, start = [], 0
    for match in _FLAG.finditer(line):
        if not mask[match.start(1) - 2]:
            continue
        flags.add(match.group(1))
        kept.append(line[start:match.start()])
        start = match.end()
    return " ".join([*kept, line[start:]]).strip(), flags


def _walk(value: Any, fields: tuple[str, ...], label: str) -> Any:
    for i, field in enumerate(fields):
        if isinstance(value, dict) and field in value:
            value = value[field]
        elif isinstance(value, list) and field.lstrip("-").isdigit() and \
                -len(value) <= int(field) < len(value):
            value = value[int(field)]
        else:
            where = ".".join(fields[:i]) or "the state"
            known = ", ".join(value) if isinstance(value, dict) else ""
            hint = f"; it has {known}" if known else ""
            raise UsageError(f"{label}: {where} has no {short(field, 60)}{hint}")
    return value


def _deep_set(value: Any, fields: tuple[str, ...], new: Any, label: str) -> Any:
    """A copy of ``value`` with ``new`` at ``fields`` (dict keys or list indexes)."""
    if not fields:
        return new
    head, rest = fields[0], fields[1:]
    if isinstance(value, dict):
        copied = dict(value)
        copied[head] = _deep_set(value.get(head, {}), rest, new, label)
        return copied
    if isinstance(value, list) and head.lstrip("-").isdigit() and \
            -len(value) <= int(head) < len(value):
        items = list(value)
        items[int(head)] = _deep_set(value[int(head)], rest, new, label)
        return items
    raise UsageError(f"{label}: cannot reach {short(head, 60)} inside {type(value).__name__}")


_DELETE = object()
_ABSENT = object()


@magics_class
class FlowStateMagics(Magics, Configurable):
    """``%state``, ``%flow`` and ``%%flow``; loaded by ``%load_ext flowstate_jupyter``."""

    traceback = Bool(False, help="Show full tracebacks instead of one-line UsageErrors.").tag(
        config=True)

    def __init__(self, shell: Any, kernel: KernelState) -> None:
        Configurable.__init__(self, config=shell.config)
        Magics.__init__(self, shell=shell)
        self.kernel = kernel

    # -- plumbing -----------------------------------------------------------------------------
    def _user_ns(self) -> dict:
        """The namespace of the shell these magics belong to (always set once loaded)."""
        assert self.shell is not None, "the magics are not attached to a shell"
        return self.shell.user_ns

    def _guard(self, show_traceback: bool, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; turn library errors into one-line UsageErrors unless asked not to."""
        if show_traceback or self.traceback:
            return fn()
        try:
            return fn()
        except UsageError:
            raise
        except (FlowStateError, PathError, LookupError, ValueError, TypeError) as exc:
            raise UsageError(f"{_one_line(exc)}  (add -t for the traceback)") from None

    def _target(self, path: StatePath, flow: str | None = None, create: bool = False) -> Any:
        """The handle a path points at: a scope, a resource, or a collection instance."""
        handle = self.kernel.handle(path.scope, flow)
        if path.resource is None:
            return handle
        resources = handle.resources
        if path.resource not in resources:
            known = ", ".join(resources) or "none"
            raise UsageError(f"{path.label}: {path.scope} has no resource "
                             f"{short(path.resource, 60)}; defined: {known}")
        res = resources[path.resource]
        if isinstance(res, CollectionHandle):
            if path.key is None:
                if path.fields:
                    raise UsageError(f"{path.label}: {path.resource} is a collection; name an "
                                     f"instance as {path.resource}[KEY]")
                return res
            if create:  # a missing instance is created by the write itself, or not at all
                return res.instance(path.key)
            return res.get(path.key)
        if path.key is not None:
            raise UsageError(f"{path.label}: {path.resource} is not a collection")
        return res

    # -- %state ---------------------------------------------------------------------------------
    @magic_arguments()
    @argument("-t", "--traceback", action="store_true", help="show the full traceback on error")
    @argument("verb", nargs="?", default=None,
              help="get|set|patch|inc|push|del|history|diff|undo|reset|use|sessions|compare|"
                   "client|path; none: show the live Inspector")
    @argument("args", nargs="*", help="PATH [VALUE] (VALUE is JSON), or the verb's arguments")
    @argument("--session", help="with 'use': switch to this session id")
    @argument("--user", help="with 'use': switch to this user id")
    @argument("--project", help="with 'use': switch to this project id")
    @argument("--flow", help="with 'use': make this registered flow current")
    @argument("--limit", type=int, default=20, help="with 'history': how many versions")
    @argument("--side", action="store_true",
              help="with no verb or 'client': open the view in a JupyterLab side panel")
    @argument("--table", action="store_true",
              help="with 'history': a static table instead of the History widget")
    @line_magic
    @no_var_expand
    def state(self, line: str = "") -> Any:
        """Inspect and change state of the current session, user and project.

        Paths: ``session.mode``, ``user.resources.preferences.theme``,
        ``session.resources.files[docs/a.md].size`` (the scope defaults to session).

        Examples::

            %state                                  # live Inspector widget
            %state --side                           # the Inspector in a side panel
            x = %state get session.mode
            %state set session.mode "agent"
            %state patch session {"mode": "chat", "message_count": 0}
            %state inc session.message_count 2
            %state push session.resources.plan.steps "write tests"
            %state del session.notes.draft
            %state history session                  # History widget: pages, diff, restore
            %state history session --table --limit 5
            %state diff 3 5 session
            %state undo session
            %state reset session
            %state use --session s2 --user bob --flow assistant
            %state sessions                         # with the session each was forked from
            %state compare s1 s2                    # state, resources, client data side by side
            %state client                           # live client-data preview
            %state client --side
            %state path                             # this notebook's Windmill state path
        """
        raw, options, show_tb = _take_options(line)
        raw, flags = _take_flags(raw)
        verb, _, rest = raw.partition(" ")
        rest = rest.strip()
        if verb.startswith("-") and verb not in ("-t", "--traceback"):
            parse_argstring(self.state, line)  # argparse's own message for unknown flags
        return self._guard(show_tb, lambda: self._state(verb, rest, options, flags))

    def _state(self, verb: str, rest: str, options: dict[str, str],
               flags: frozenset[str] | set[str] = frozenset()) -> Any:
        if "side" in flags and verb not in ("", "inspect", "client"):
            raise UsageError("--side opens a live view: %state --side or %state client --side")
        if "table" in flags and verb != "history":
            raise UsageError("--table goes with history: %state history session --table")
        if verb in ("", "inspect", "client"):
            from .widgets import ClientDataPreview, Inspector
            view = Inspector(self.kernel.session()) if verb != "client" else \
                ClientDataPreview(self.kernel.session(options.get("flow")))
            if "side" not in flags:
                return view
            title = "flowstate · " + ("client data" if verb == "client" else "state")
            view.show(side=True, title=title)
            return None
        if verb == "history":
            return self._history(rest, options, table="table" in flags)
        if verb == "use":
            return self._use(options, rest)
        if verb == "sessions":
            return self._sessions()
        if verb == "compare":
            return self._compare(rest, options)
        if verb == "path":
            from ..windmill import get_state_path
            return get_state_path()  # shown as the cell's value; `p = %state path` works
        handlers = {"get": self._get, "set": self._set, "patch": self._patch, "inc": self._inc,
                    "push": self._push, "del": self._del, "diff": self._diff,
                    "undo": self._undo, "reset": self._reset}
        if verb not in handlers:
            raise UsageError(f"unknown %state verb {short(verb, 40)}; use one of "
                             f"{', '.join(handlers)}, history, use, sessions, compare, client, "
                             f"path "
                             f"(see %state?)")
        return handlers[verb](rest, options)

    def _path_and_value(self, rest: str, verb: str, value_needed: bool = True
                        ) -> tuple[StatePath, str]:
        path_text, _, value_text = rest.partition(" ")
        if not path_text:
            raise UsageError(f"%state {verb} needs a PATH, e.g. %state {verb} session.mode")
        if value_needed and not value_text.strip():
            raise UsageError(f"%state {verb} {path_text} needs a VALUE (JSON)")
        return parse_path(path_text), value_text

    def _get(self, rest: str, options: dict) -> Any:
        path, _ = self._path_and_value(rest, "get", value_needed=False)
        target = self._target(path, options.get("flow"))
        if isinstance(target, CollectionHandle):
            return target.list()
        return _walk(target.state_dict(), path.fields, path.label)

    def _report(self, path: StatePath, target: Any, changed: bool) -> None:
        what = "" if changed else " (unchanged: no new version)"
        print(f"{path.label}: v{target.version}{what}")

    def _set(self, rest: str, options: dict) -> None:
        path, value_text = self._path_and_value(rest, "set")
        value = parse_value(value_text, path.label)
        target = self._target(path, options.get("flow"), create=True)
        fields = path.fields
        if not fields:
            changed = target.set_state(value)
        elif len(fields) == 1:
            changed = target.patch_state({fields[0]: value})
        elif len(fields) == 2 and isinstance(target.state_dict().get(fields[0]), dict):
            changed = target.set_state_record(fields[0], fields[1], value)
        else:
            changed = target.atomic_state(lambda s: {fields[0]: _deep_set(
                _jsonable_field(s, fields[0]), fields[1:], value, path.label)})
        self._report(path, target, changed)

    def _patch(self, rest: str, options: dict) -> None:
        path, value_text = self._path_and_value(rest, "patch")
        value = parse_value(value_text, path.label)
        if not isinstance(value, dict):
            raise UsageError(f"{path.label}: %state patch takes a JSON object, e.g. "
                             f"{{\"mode\": \"agent\"}}")
        target = self._target(path, options.get("flow"), create=True)
        if not path.fields:
            changed = target.patch_state(value)
        else:
            current = _walk(target.state_dict(), path.fields, path.label)
            if not isinstance(current, dict):
                raise UsageError(f"{path.label} is not an object; use %state set")
            merged = {**current, **value}
            changed = target.atomic_state(lambda s: {path.fields[0]: _deep_set(
                _jsonable_field(s, path.fields[0]), path.fields[1:], merged, path.label)})
        self._report(path, target, changed)

    def _inc(self, rest: str, options: dict) -> None:
        path, value_text = self._path_and_value(rest, "inc", value_needed=False)
        amount = parse_value(value_text, path.label) if value_text.strip() else 1
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise UsageError(f"{path.label}: %state inc takes a number, not "
                             f"{short(value_text.strip(), 60)}")
        target = self._target(path, options.get("flow"), create=True)
        if len(path.fields) != 1:
            raise UsageError("%state inc needs a top-level field, e.g. session.message_count")
        self._report(path, target, target.inc_state({path.fields[0]: amount}))

    def _push(self, rest: str, options: dict) -> None:
        path, value_text = self._path_and_value(rest, "push")
        value = parse_value(value_text, path.label)
        target = self._target(path, options.get("flow"), create=True)
        if len(path.fields) != 1:
            raise UsageError("%state push needs a top-level list field, e.g. session.tags")
        self._report(path, target, target.push_state(path.fields[0], value))

    def _del(self, rest: str, options: dict) -> None:
        path, _ = self._path_and_value(rest, "del", value_needed=False)
        target = self._target(path, options.get("flow"))
        fields = path.fields
        if not fields:
            if isinstance(target, ResourceHandle):
                changed = target.delete()
                print(f"{path.label}: deleted" if changed else f"{path.label}: nothing to delete")
                return
            raise UsageError(f"%state del needs a field or a resource; to clear a whole scope "
                             f"use %state reset {path.scope}")
        if len(fields) == 1:
            model_defaults = defaults(target.model if hasattr(target, "model")
                                      else target.definition.state)
            if fields[0] not in target.state_dict():
                raise UsageError(f"{path.label}: no field {short(fields[0], 60)}")
            if fields[0] in model_defaults:
                changed = target.patch_state({fields[0]: model_defaults[fields[0]]})
            else:
                changed = target.set_state({k: v for k, v in target.state_dict().items()
                                            if k != fields[0]})
        elif len(fields) == 2 and isinstance(target.state_dict().get(fields[0]), dict):
            changed = target.delete_state_record(fields[0], fields[1])
        else:
            parent = _walk(target.state_dict(), fields[:-1], path.label)
            if not isinstance(parent, dict):
                raise UsageError(f"{path.label}: can only delete keys of objects")
            smaller = {k: v for k, v in parent.items() if k != fields[-1]}
            changed = target.atomic_state(lambda s: {fields[0]: _deep_set(
                _jsonable_field(s, fields[0]), fields[1:-1], smaller, path.label)})
        self._report(path, target, changed)

    def _scope_target(self, rest: str, options: dict) -> tuple[StatePath, Any]:
        text = rest.split()[-1] if rest.split() else "session"
        path = parse_path(text)
        if path.fields:
            raise UsageError(f"{path.label}: name a scope or resource, not a field")
        target = self._target(path, options.get("flow"))
        if isinstance(target, CollectionHandle):
            raise UsageError(f"{path.label}: name one instance, {path.resource}[KEY]")
        return path, target

    def _history(self, rest: str, options: dict, table: bool = False) -> Any:
        """The History widget of a scope or resource; ``table``: a static table instead."""
        path, target = self._scope_target(rest, options)
        if not table:
            from .widgets import History
            limit = int(options["limit"]) if "limit" in options else 500
            return History(target, limit=limit)
        limit = int(options.get("limit", 20))
        rows = [(f"v{v}", t, op, s) for v, t, op, s in history_rows(target, limit)]
        return Table(f"history of {path.label}", ("version", "time", "operation", "state"),
                     rows, nowrap=(0, 1))

    def _diff(self, rest: str, options: dict) -> None:
        parts = rest.split()
        if len(parts) < 2 or not all(p.lstrip("v").isdigit() for p in parts[:2]):
            raise UsageError("%state diff V1 V2 [SCOPE], e.g. %state diff 3 5 session")
        a, b = (int(p.lstrip("v")) for p in parts[:2])
        path, target = self._scope_target(" ".join(parts[2:]) or "session", options)
        print(f"{path.label} v{a} -> v{b}")
        print(version_diff_text(target, a, b))

    def _undo(self, rest: str, options: dict) -> None:
        path, target = self._scope_target(rest, options)
        history = target.history(limit=2)
        if not history:
            raise UsageError(f"{path.label} has never been written: nothing to undo")
        previous = history[1].state if len(history) > 1 and history[1].version == \
            history[0].version - 1 else None
        if previous is None and history[0].version > 1:
            raise UsageError(f"{path.label}: v{history[0].version - 1} is no longer kept")
        changed = target.set_state(previous if previous is not None else {})
        print(f"{path.label}: restored v{history[0].version - 1} as v{target.version}"
              if changed else f"{path.label}: already equal to the previous version")

    def _reset(self, rest: str, options: dict) -> None:
        path, target = self._scope_target(rest, options)
        changed = target.reset_state()
        print(f"{path.label}: reset to defaults (v{target.version})" if changed
              else f"{path.label}: already at its defaults")

    def _use(self, options: dict, rest: str) -> None:
        if rest:
            raise UsageError(f"%state use takes only options (--session, --user, --project, "
                             f"--flow), not {short(rest, 60)}")
        if not options:
            raise UsageError("%state use --session ID | --user ID | --project ID | --flow NAME")
        kernel = self.kernel
        saved = (kernel.current_flow, kernel.session_id, kernel.user, kernel.project)
        try:
            if "flow" in options:
                kernel.flow(options["flow"])  # must exist
                kernel.current_flow = options["flow"]
            if "session" in options:
                kernel.session_id = check_id(options["session"], "session id")
            if "user" in options:
                kernel.user = check_id(options["user"], "user id")
            if "project" in options:
                kernel.project = check_id(options["project"], "project id")
            kernel.session()  # a session of another user or flow kind is refused here
        except BaseException:
            kernel.current_flow, kernel.session_id, kernel.user, kernel.project = saved
            raise
        print(f"session {kernel.session_id!r}, user {kernel.user!r}, project "
              f"{kernel.project!r}, flow {kernel.current_flow or '(none)'}")

    def _sessions(self) -> Table:
        if self.kernel.current_flow is None:
            records = self.kernel.store.list("session", name=SESSION_META)
            rows = [(r.scope_id, r.state.get("user", ""), r.state.get("flow", ""),
                     h.when(r.updated_at), _parent_text(meta_parent(r.state)))
                    for r in records]
        else:
            rows = [(s["id"], s.get("user", ""), s.get("flow", ""), h.when(s.get("updated_at")),
                     _parent_text(s.get("parent")))
                    for s in self.kernel.flow().sessions(store=self.kernel.store)]
        return Table("sessions", ("session", "user", "flow", "updated", "forked from"), rows,
                     nowrap=(3,))

    def _compare(self, rest: str, options: dict) -> Any:
        ids = rest.split()
        if len(ids) != 2:
            raise UsageError("%state compare A B: two session ids, e.g. %state compare s1 s2")
        from ..flows.compare import compare
        kernel = self.kernel
        sessions = []
        for session_id in ids:
            check_id(session_id, "session id")
            if kernel.store.read("session", session_id, SESSION_META) is None:
                raise UsageError(f"no session {session_id!r} in this store; %state sessions "
                                 f"lists them")
            if options.get("flow") is None and kernel.current_flow is None:
                sessions.append(_PlainSession(kernel.store, session_id, kernel.user,
                                              kernel.project))
            else:
                sessions.append(kernel.flow(options.get("flow")).session(
                    session_id, project=kernel.project, store=kernel.store))
        return compare(*sessions)

    # -- %%flow and %flow ---------------------------------------------------------------------
    # IPython's stubs type these decorators' argument as Never: nothing would pass them.
    @cell_magic("flow")  # type: ignore[arg-type]
    @no_var_expand
    def flow_cell(self, line: str, cell: str) -> Any:
        """Define a flow in Python and register it: ``%%flow NAME``.

        The cell runs in your namespace. Its flow is the value of the last expression, else the
        one flow the cell bound to a name. It is registered under NAME, bound to NAME, becomes
        current, and its summary is shown.
        """
        raw, _, _show_tb = _take_options(line)
        name = raw.strip()
        if not name.isidentifier():
            raise UsageError("%%flow NAME: NAME must be a Python identifier, e.g. %%flow assistant")
        from ..flows.flow import Flow
        ns = self._user_ns()
        before = {k: v for k, v in ns.items() if isinstance(v, Flow)}
        tree = ast.parse(cell)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body[-1].value)
            tree.body.pop()
        exec(compile(tree, "<%%flow>", "exec"), ns)
        value = eval(compile(last, "<%%flow>", "eval"), ns) if last is not None else None
        if isinstance(value, Flow):
            flow = value
        else:
            new = {k: v for k, v in ns.items() if isinstance(v, Flow) and before.get(k) is not v}
            if len(new) > 1:
                raise UsageError(f"the cell defined several flows ({', '.join(sorted(new))}); "
                                 f"end it with the one to register as {name}")
            if not new:
                raise UsageError("the cell defined no flow; end it with fs.define_flow(...)")
            flow = next(iter(new.values()))
        self.kernel.register(name, flow)
        ns[name] = flow
        _show_flow(flow)
        return None

    @magic_arguments(name="flow")
    @argument("-t", "--traceback", action="store_true", help="show the full traceback on error")
    @argument("verb", help="run|list|show|runs|resume|trace|replay|graph|ui|serve")
    @argument("args", nargs="*", help="run: ACTION [INPUT_JSON]; show/graph/ui: [NAME]; "
                                      "resume: [REQUEST_ID] [VALUE_JSON]; trace, replay: "
                                      "[REQUEST_ID]")
    @argument("--status", help="with 'runs': only runs with this status (e.g. suspended)")
    @argument("--flow", help="the registered flow (default: the current one)")
    @argument("--session", help="run in this session (default: this notebook's)")
    @argument("--user", help="run as this user (default: FLOWSTATE_USER or the OS user)")
    @line_magic("flow")  # type: ignore[arg-type]
    @no_var_expand
    def flow_line(self, line: str = "") -> Any:
        """Run and inspect registered flows.

        Examples::

            %flow run chat {"message": "hi"}
            %flow run chat {"message": "hi"} --session s2 --user bob
            %flow list
            %flow show assistant
            %flow runs
            %flow runs --status suspended
            %flow resume {"approved": true}       # the latest suspended run of this session
            %flow resume r-1a2b3c {"approved": true}
            %flow resume r-1a2b3c                 # its form: fill it in, press Resume
            %flow trace                 # the last run's trace: spans, durations, details
            %flow trace r-1a2b3c
            %flow replay                # the last run again with the current code: the diff
            %flow replay r-1a2b3c
            %flow graph assistant       # a picture of the flow (Mermaid; text elsewhere)
            %flow ui                    # a FlowRunner widget: form, Run, output, events
            %flow serve --port 8000     # serve the flow over HTTP from this kernel (--stop)
        """
        raw, options, show_tb = _take_options(line)
        verb, _, rest = raw.partition(" ")
        if not verb:
            raise UsageError("%flow run|list|show|runs|resume|trace|replay|graph|ui|serve "
                             "(see %flow?)")
        return self._guard(show_tb, lambda: self._flow(verb, rest.strip(), options))

    def _flow(self, verb: str, rest: str, options: dict) -> Any:
        kernel = self.kernel
        if verb == "list":
            rows = [(("* " if n == kernel.current_flow else "  ") + n, f.kind,
                     ", ".join(f.actions)) for n, f in kernel.flows.items()]
            return Table("flows", ("name", "kind", "actions"), rows,
                         subtitle="* the current flow" if rows else "")
        if verb == "show":
            _show_flow(kernel.flow(rest or options.get("flow")))
            return None
        if verb == "runs":
            session = kernel.session(options.get("flow"))
            status = options.get("status")
            if status is not None and status not in _RUN_STATUSES:
                raise UsageError(f"%flow runs --status takes one of {', '.join(_RUN_STATUSES)}, "
                                 f"not {status!r}")
            runs = list_runs(kernel.store, session.id, int(options.get("limit", 20)),
                             status=status)
            return Table(f"{status + ' ' if status else ''}runs of session {session.id!r}",
                         ("request", "action", "status", "started", "took", "outcome"),
                         runs_rows(runs), nowrap=(0, 3, 4), subtitle=_runs_hint(runs))
        if verb == "ui":
            from .widgets import FlowRunner
            name = rest or options.get("flow")
            flow = kernel.flow(name)
            return FlowRunner(flow, kernel.session(name))
        if verb == "run":
            return self._run(rest, options)
        if verb == "resume":
            return self._resume(rest, options)
        if verb == "trace":
            return self._trace(rest, options)
        if verb == "replay":
            return self._replay(rest, options)
        if verb == "graph":
            return kernel.flow(rest or options.get("flow")).graph()
        if verb == "serve":
            from .serving import serve_command
            return serve_command(kernel, rest, options)
        raise UsageError(f"unknown %flow verb {short(verb, 40)}; use run, list, show, runs, "
                         f"resume, trace, replay, graph, ui or serve")

    def _replay(self, rest: str, options: dict) -> Any:
        """``%flow replay [REQUEST_ID]``: default, the latest ended (or waiting) run of this
        session; returns the :class:`ReplayResult`, which shows the diff."""
        kernel = self.kernel
        flow = kernel.flow(options.get("flow"))
        given = rest.split()
        if len(given) > 1:
            raise UsageError("%flow replay [REQUEST_ID]: one request id at most, e.g. "
                             "%flow replay r-1a2b3c (see %flow runs)")
        if given:
            request_id = check_id(given[0], "request id")
        else:
            session = check_id(options.get("session", kernel.session_id), "session id")
            ended = [r for r in list_runs(kernel.store, session, None, flow_kind=flow.kind)
                     if r.get("status") in ("ok", "error", "suspended")]
            if not ended:
                raise UsageError(f"session {session!r} has no ended run of flow {flow.kind!r} "
                                 f"to replay; name one: %flow replay REQUEST_ID (see %flow runs)")
            request_id = ended[0]["request_id"]
        return flow.replay(request_id, store=kernel.store)

    def _resume(self, rest: str, options: dict) -> Any:
        """``%flow resume [REQUEST_ID] [VALUE_JSON]``: default, this session's latest waiting
        run. Without a value, a suspended run shows its form (nothing is resumed yet)."""
        kernel = self.kernel
        flow = kernel.flow(options.get("flow"))
        first, _, more = rest.partition(" ")
        if first.startswith("r-"):
            request_id, value_text = check_id(first, "request id"), more
        else:
            request_id, value_text = None, rest
        if request_id is None:
            session = check_id(options.get("session", kernel.session_id), "session id")
            waiting = [r for r in list_runs(kernel.store, session, None)
                       if r.get("status") in ("suspended", "interrupted")
                       and r.get("flow") == flow.kind]
            if not waiting:
                raise UsageError(f"session {session!r} has no suspended or interrupted run of "
                                 f"flow {flow.kind!r}; name one: %flow resume REQUEST_ID "
                                 f"[VALUE_JSON] (see %flow runs)")
            request_id = waiting[0]["request_id"]
        value = parse_value(value_text) if value_text.strip() else None
        runs = flow.runs(store=kernel.store)
        run = next((r for r in runs if r["request_id"] == request_id), None)
        if value is None and run is not None and run.get("status") == "suspended":
            from .resume import ResumeForm
            return ResumeForm(flow, request_id, store=kernel.store)
        owner = run.get("session") if run is not None else None
        before = _flat_client(flow.session(owner, store=kernel.store)) if owner else {}
        result = flow.resume(request_id, value, store=kernel.store)
        self._user_ns()["_"] = result
        after = _flat_client(flow.session(result.session_id, store=kernel.store))
        changed = {k: v for k, v in after.items() if before.get(k, object()) != v}
        display(_RunSummary(result, changed))
        self._follow_up(flow, result)
        return None

    def _trace(self, rest: str, options: dict) -> Any:
        """``%flow trace [REQUEST_ID]``: the trace view of a run (default: the last run of
        this notebook's session, or of ``--session``)."""
        from .traceview import TraceView
        kernel = self.kernel
        request_id = rest.split()[0] if rest.split() else None
        if request_id is None:
            session = check_id(options.get("session", kernel.session_id), "session id")
            last = list_runs(kernel.store, session, 1)
            if not last:
                raise UsageError(f"session {session!r} has no runs yet; run one with %flow run "
                                 f"ACTION, or name one: %flow trace REQUEST_ID")
            request_id = last[0]["request_id"]
        return TraceView(kernel.store, check_id(request_id, "request id"))

    def _follow_up(self, flow: Any, result: Any) -> None:
        """Under a run's summary: the form of a suspended run."""
        if result.status == "suspended" and result.suspension is not None:
            from .resume import ResumeForm
            display(ResumeForm(flow, result.request_id, store=self.kernel.store,
                               suspension=result.suspension))

    def _run(self, rest: str, options: dict) -> None:
        action, _, input_text = rest.partition(" ")
        if not action:
            raise UsageError("%flow run ACTION [INPUT_JSON], e.g. "
                             "%flow run chat {\"message\": \"hi\"}")
        kernel = self.kernel
        flow = kernel.flow(options.get("flow"))
        payload = parse_value(input_text) if input_text.strip() else None
        # Opening the session writes its record: refuse a wrong action or input first, as the
        # run itself would (flow.run refuses an unknown action before it writes anything).
        act = flow.actions.get(action)
        if act is None:
            flow.run(action, payload, store=kernel.store)  # raises UnknownActionError
        check_input_keys(act.input_model, payload, where=f"action {action!r} input")
        validate_value(act.input_model, payload, where=f"action {action!r} input")
        session_id = options.get("session", kernel.session_id)
        user = options.get("user", kernel.user)
        session = flow.session(session_id, user=user, project=kernel.project, store=kernel.store)
        before = _flat_client(session)
        shown = _RunDisplay(action)
        try:
            result = session.run(action, payload, on_event=shown.progress.on_event)
        finally:
            shown.progress.stop()
        self._user_ns()["_"] = result
        after = _flat_client(session)
        changed = {k: v for k, v in after.items() if before.get(k, object()) != v}
        shown.done(_RunSummary(result, changed))
        self._follow_up(flow, result)
        return None


def _parent_text(parent: Any) -> str:
    """``s1 @ v3`` for a forked session, ``""`` for one that was not forked."""
    return f"{parent[0]} @ v{parent[1]}" if parent else ""


def _jsonable_field(snapshot: Any, field: str) -> Any:
    """A top-level field of a state snapshot (model or mapping) as JSON; ``{}`` if absent, so a
    nested write creates it (and the schema refuses it when the model has no such field)."""
    if isinstance(snapshot, Mapping):
        value = snapshot.get(field, _ABSENT)
    else:
        value = getattr(snapshot, field, _ABSENT)
    if value is _ABSENT:
        return {}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=lambda o: o.model_dump(mode="json")
                                 if hasattr(o, "model_dump") else str(o)))


def _flat_client(session: Any) -> dict:
    try:
        return flatten_client_view(session.snapshot())
    except Exception:  # noqa: BLE001 - a broken client-data function shows in the preview
        return {}


_RUN_STATUSES = ("running", "ok", "error", "suspended", "interrupted")


def _runs_hint(runs: list[dict]) -> str:
    """What to do with the runs a ``%flow runs`` table lists, when some wait."""
    statuses = {r.get("status") for r in runs}
    hints = []
    if "suspended" in statuses:
        hints.append("a suspended run: %flow resume REQUEST_ID shows its form, "
                     "%flow resume REQUEST_ID VALUE_JSON resumes it")
    if "interrupted" in statuses:
        hints.append("an interrupted run: %flow resume REQUEST_ID continues it")
    if "error" in statuses:
        hints.append("a failed run: %flow trace REQUEST_ID shows where")
    return "; ".join(hints)


class _RunDisplay:
    """What ``%flow run`` shows while the run runs and after: one output, updated in place.

    In a kernel, a run that lasts longer than about a second shows its progress (elapsed time,
    steps done, events, the block running now) in an output with a display id; the summary
    replaces it when the run ends. Elsewhere (a terminal) only the summary is shown.
    """

    def __init__(self, action: str) -> None:
        from ._show import in_kernel
        self._handle: Any = None
        self._kernel = in_kernel()
        self.progress = Progress(action, self._show)

    def _show(self, progress: dict) -> None:
        if not self._kernel:
            return
        bundle = {"text/html": progress_html(progress), "text/plain": progress_text(progress)}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)

    def done(self, summary: Any) -> None:
        if self._handle is not None:
            self._handle.update(summary)
        else:
            display(summary)


class _RunSummary:
    """What ``%flow run`` shows: output or error, the client data that changed, and events."""

    def __init__(self, result: Any, changed: dict) -> None:
        self.result, self.changed = result, changed

    def _repr_html_(self) -> str:
        r = self.result
        hint = ""
        if r.error is not None and r.trace is not None:
            hint = command_hint("where it failed, block by block:", f"%flow trace {r.request_id}")
        return run_html(r, self.changed, hint=hint)

    def __repr__(self) -> str:
        r = self.result
        suspension = getattr(r, "suspension", None)
        if r.error is not None:
            head = f"error: {type(r.error).__name__}: {r.error}"
            if r.trace is not None:
                head += f"\nwhere it failed, block by block: %flow trace {r.request_id}"
        elif suspension is not None:
            head = (f"suspended: {suspension.message or suspension.path}; resume with "
                    f"%flow resume {r.request_id} VALUE_JSON (fields: "
                    f"{', '.join(suspension.schema.get('properties', {})) or 'none'})")
        else:
            out = r.output.model_dump(mode="json") if hasattr(r.output, "model_dump") else r.output
            head = f"output: {h.preview(out, 500)}"
        events = [event_label(e) for e in r.events[:50]]
        changed = [f"{k} = {h.preview(v, 200)}" for k, v in self.changed.items()]
        return "\n".join([head, f"events ({len(r.events)}):", *events,
                          "client data changed:", *(changed or ["(none)"])])
