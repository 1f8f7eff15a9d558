"""The ``%state``, ``%flow`` and ``%%flow`` magics: the entry that IPython loads.

``FlowStateMagics`` holds the magics' names, options and help, and turns library errors into one
clear ``UsageError`` line (add ``-t`` / ``--traceback`` after the magic name to see the full
traceback instead). What each verb does lives in a module named for its job: ``_lines.py``
(magic lines are data: options, comments, JSON values), ``_state_verbs.py`` (``%state``),
``_flow_verbs.py`` (``%flow``), ``_flow_cell.py`` (``%%flow``), ``_run_display.py`` (a run's
progress and summary), ``_outputs.py`` (tables, a flow's summary) and ``serving.py``
(``%flow serve``). See docs/guide.md, 'In a notebook'.

The store is the source of truth: the magics keep only which flow and session you look at
(``KernelState``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool
from traitlets.config import Configurable

from ..errors import FlowStateError
from ._flow_cell import flow_of_cell
from ._flow_verbs import flow_verb
from ._lines import one_line, take_flags, take_options
from ._outputs import show_flow
from ._state_verbs import state_verb
from .kernel import KernelState
from .paths import PathError


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
            raise UsageError(f"{one_line(exc)}  (add -t for the traceback)") from None

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
        raw, options, show_tb = take_options(line)
        raw, flags = take_flags(raw)
        verb, _, rest = raw.partition(" ")
        rest = rest.strip()
        if verb.startswith("-") and verb not in ("-t", "--traceback"):
            parse_argstring(self.state, line)  # argparse's own message for unknown flags
        return self._guard(show_tb, lambda: state_verb(self.kernel, verb, rest, options, flags))

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
        raw, _, _show_tb = take_options(line)
        name = raw.strip()
        if not name.isidentifier():
            raise UsageError("%%flow NAME: NAME must be a Python identifier, e.g. %%flow assistant")
        ns = self._user_ns()
        flow = flow_of_cell(ns, cell, name)
        self.kernel.register(name, flow)
        ns[name] = flow
        show_flow(flow)
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
        raw, options, show_tb = take_options(line)
        verb, _, rest = raw.partition(" ")
        if not verb:
            raise UsageError("%flow run|list|show|runs|resume|trace|replay|graph|ui|serve "
                             "(see %flow?)")
        return self._guard(show_tb, lambda: flow_verb(self.kernel, self._user_ns(), verb,
                                                      rest.strip(), options))
