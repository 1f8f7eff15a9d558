"""The verbs of ``%flow``: run, list and show registered flows; list, resume, trace and replay
their runs; draw a flow, open its runner widget, serve it.

Each verb is a function of the kernel's state (``KernelState``), the rest of the line and its
options; ``flow_verb`` picks one. ``run`` and ``resume`` bind the run's result to ``_`` in the
notebook's namespace and show its summary (``_run_display.py``); a run that suspends shows its
form under the summary.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from ..base.ids import check_id
from ..base.text import short
from ..flows.bookkeeping import list_runs
from ..model.display import runs_rows
from ..model.schema import check_input_keys, validate_value
from ._lines import parse_value
from ._outputs import Table, show_flow
from ._run_display import RunDisplay, RunSummary, changed_client, flat_client
from .kernel import KernelState

_RUN_STATUSES = ("running", "ok", "error", "suspended", "interrupted")


def flow_verb(kernel: KernelState, ns: dict, verb: str, rest: str, options: dict) -> Any:
    """Do ``%flow VERB REST``; what it returns is the cell's value. ``ns``: the notebook's
    namespace, where ``run`` and ``resume`` put their result as ``_``."""
    if verb == "list":
        rows = [(("* " if n == kernel.current_flow else "  ") + n, f.kind,
                 ", ".join(f.actions)) for n, f in kernel.flows.items()]
        return Table("flows", ("name", "kind", "actions"), rows,
                     subtitle="* the current flow" if rows else "")
    if verb == "show":
        show_flow(kernel.flow(rest or options.get("flow")))
        return None
    if verb == "runs":
        return _runs(kernel, options)
    if verb == "ui":
        from .widgets import FlowRunner
        name = rest or options.get("flow")
        flow = kernel.flow(name)
        return FlowRunner(flow, kernel.session(name))
    if verb == "run":
        return _run(kernel, ns, rest, options)
    if verb == "resume":
        return _resume(kernel, ns, rest, options)
    if verb == "trace":
        return _trace(kernel, rest, options)
    if verb == "replay":
        return _replay(kernel, rest, options)
    if verb == "graph":
        return kernel.flow(rest or options.get("flow")).graph()
    if verb == "serve":
        from .serving import serve_command
        return serve_command(kernel, rest, options)
    raise UsageError(f"unknown %flow verb {short(verb, 40)}; use run, list, show, runs, "
                     f"resume, trace, replay, graph, ui or serve")


def _runs(kernel: KernelState, options: dict) -> Table:
    """``%flow runs [--status S]``: the latest runs of this notebook's session."""
    session = kernel.session(options.get("flow"))
    status = options.get("status")
    if status is not None and status not in _RUN_STATUSES:
        raise UsageError(f"%flow runs --status takes one of {', '.join(_RUN_STATUSES)}, "
                         f"not {status!r}")
    runs = list_runs(kernel.store, session.id, int(options.get("limit", 20)), status=status)
    return Table(f"{status + ' ' if status else ''}runs of session {session.id!r}",
                 ("request", "action", "status", "started", "took", "outcome"),
                 runs_rows(runs), nowrap=(0, 3, 4), subtitle=_runs_hint(runs))


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


def _session_id(kernel: KernelState, options: dict) -> str:
    """The session a verb without a request id looks at: ``--session``, else this notebook's."""
    return check_id(options.get("session", kernel.session_id), "session id")


def _run(kernel: KernelState, ns: dict, rest: str, options: dict) -> None:
    action, _, input_text = rest.partition(" ")
    if not action:
        raise UsageError("%flow run ACTION [INPUT_JSON], e.g. "
                         "%flow run chat {\"message\": \"hi\"}")
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
    before = flat_client(session)
    shown = RunDisplay(action)
    try:
        result = session.run(action, payload, on_event=shown.progress.on_event)
    finally:
        shown.progress.stop()
    ns["_"] = result
    shown.done(RunSummary(result, changed_client(before, flat_client(session))))
    _follow_up(kernel, flow, result)


def _resume(kernel: KernelState, ns: dict, rest: str, options: dict) -> Any:
    """``%flow resume [REQUEST_ID] [VALUE_JSON]``: default, this session's latest waiting
    run. Without a value, a suspended run shows its form (nothing is resumed yet)."""
    flow = kernel.flow(options.get("flow"))
    first, _, more = rest.partition(" ")
    if first.startswith("r-"):
        request_id, value_text = check_id(first, "request id"), more
    else:
        request_id, value_text = None, rest
    if request_id is None:
        session = _session_id(kernel, options)
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
    before = flat_client(flow.session(owner, store=kernel.store)) if owner else {}
    result = flow.resume(request_id, value, store=kernel.store)
    ns["_"] = result
    after = flat_client(flow.session(result.session_id, store=kernel.store))
    display(RunSummary(result, changed_client(before, after)))
    _follow_up(kernel, flow, result)
    return None


def _follow_up(kernel: KernelState, flow: Any, result: Any) -> None:
    """Under a run's summary: the form of a suspended run."""
    if result.status == "suspended" and result.suspension is not None:
        from .resume import ResumeForm
        display(ResumeForm(flow, result.request_id, store=kernel.store,
                           suspension=result.suspension))


def _trace(kernel: KernelState, rest: str, options: dict) -> Any:
    """``%flow trace [REQUEST_ID]``: the trace view of a run (default: the last run of this
    notebook's session, or of ``--session``)."""
    from .traceview import TraceView
    request_id = rest.split()[0] if rest.split() else None
    if request_id is None:
        session = _session_id(kernel, options)
        last = list_runs(kernel.store, session, 1)
        if not last:
            raise UsageError(f"session {session!r} has no runs yet; run one with %flow run "
                             f"ACTION, or name one: %flow trace REQUEST_ID")
        request_id = last[0]["request_id"]
    return TraceView(kernel.store, check_id(request_id, "request id"))


def _replay(kernel: KernelState, rest: str, options: dict) -> Any:
    """``%flow replay [REQUEST_ID]``: default, the latest ended (or waiting) run of this
    session; returns the :class:`ReplayResult`, which shows the diff."""
    flow = kernel.flow(options.get("flow"))
    given = rest.split()
    if len(given) > 1:
        raise UsageError("%flow replay [REQUEST_ID]: one request id at most, e.g. "
                         "%flow replay r-1a2b3c (see %flow runs)")
    if given:
        request_id = check_id(given[0], "request id")
    else:
        session = _session_id(kernel, options)
        ended = [r for r in list_runs(kernel.store, session, None, flow_kind=flow.kind)
                 if r.get("status") in ("ok", "error", "suspended")]
        if not ended:
            raise UsageError(f"session {session!r} has no ended run of flow {flow.kind!r} "
                             f"to replay; name one: %flow replay REQUEST_ID (see %flow runs)")
        request_id = ended[0]["request_id"]
    return flow.replay(request_id, store=kernel.store)
