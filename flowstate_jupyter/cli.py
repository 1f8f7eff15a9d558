"""The ``flowstate`` command: look at, move and look after a store outside notebooks.

Every command takes ``--store URL`` (default: ``FLOWSTATE_STORE``, else
``.flowstate/flowstate.db`` here) and ``--json`` for machine-readable output.

Exit codes scripts can rely on:
  0  done (doctor: healthy)
  1  something was not found, doctor found a problem, or a resumed run ended in error
  2  the command line was wrong
  3  the store could not be opened or used (StoreError)
  4  the data was refused (an import that would overwrite, a file that is not an export or
     holds a record the store's rules refuse; the message names the line)
  141  the reader of the output went away (``flowstate export - | head``): quietly, no message

Every error is one line on stderr, ``flowstate: <what, where, what to do>``, never a traceback.
An export is written owner-only (0600), through a temporary file renamed into place, so it is
whole or absent; folders it creates are 0700. An import is checked whole before anything is
written, then written in one transaction.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, NoReturn

from .base.ids import SCOPES, check_id
from .base.names import SESSION_META, check_record_name, is_reserved
from .errors import (
    FlowStateError,
    InvalidIdError,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
    RunStateError,
    StoreError,
    ValidationError,
)
from .flows import durable
from .model import html as h
from .stores import is_store_file, open_store
from .stores.base import Store
from .stores.transfer import export_store, import_store

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_STORE, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away

_EPILOG = """examples:
  flowstate ls                          scopes and how many instances each has
  flowstate ls session                  sessions, with user, flow and update time
  flowstate show session/s1             a session's state and resources
  flowstate show session/s1 --resource artifacts
  flowstate history user/alice --limit 5
  flowstate export backup.jsonl         every record with versions and history
  flowstate --store postgresql://localhost/team import backup.jsonl
  flowstate runs --status suspended     runs waiting for a person (any flow)
  flowstate resume r-1a2b '{"ok": true}'  continue a suspended (or interrupted) run
  flowstate prune                       apply retention: old runs, traces, tombstones
  flowstate prune --keep 20             ... and keep 20 versions of history per record
  flowstate doctor                      integrity, schema version, journal mode, sizes
  flowstate serve app:flow --port 8000  serve a flow over HTTP (needs the serve extra)

exit codes: 0 ok, 1 not found / unhealthy, 2 usage, 3 store error, 4 refused data,
141 output pipe closed"""


class _Out:
    """Prints text for people or JSON for scripts."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: Any, text: str) -> None:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str) if self.as_json
              else text)


def _target(spec: str) -> tuple[str, str]:
    scope, sep, scope_id = spec.partition("/")
    if not sep or scope not in SCOPES:
        raise InvalidIdError(f"{spec!r}: give SCOPE/ID, e.g. session/s1 or user/alice "
                             f"(scopes: {', '.join(SCOPES)})")
    return scope, check_id(scope_id, f"{scope} id")


def _rows(rows: list[tuple], header: tuple[str, ...]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else []
    if not rows:
        return "(none)"
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


# -- commands -------------------------------------------------------------------------------------

def cmd_ls(store: Store, args: argparse.Namespace, out: _Out) -> int:
    if not args.what:
        counts = {s: len({r.scope_id for r in store.list(s)}) for s in SCOPES}
        out.emit(counts, _rows(list(counts.items()), ("scope", "instances")))
        return EXIT_OK
    if "/" not in args.what:
        scope = args.what
        if scope not in SCOPES:
            raise InvalidIdError(f"unknown scope {scope!r}; scopes: {', '.join(SCOPES)}")
        ids: dict[str, dict] = {}
        for r in store.list(scope):
            entry = ids.setdefault(r.scope_id, {"id": r.scope_id, "updated_at": 0.0})
            entry["updated_at"] = max(entry["updated_at"], r.updated_at)
            if r.name == SESSION_META and isinstance(r.state, dict):
                entry.update(user=r.state.get("user"), flow=r.state.get("flow"))
        items = sorted(ids.values(), key=lambda e: e["updated_at"], reverse=True)
        out.emit(items, _rows([(e["id"], e.get("user") or "", e.get("flow") or "",
                                h.when(e["updated_at"])) for e in items],
                              ("id", "user", "flow", "updated")))
        return EXIT_OK
    scope, scope_id = _target(args.what)
    records = store.list(scope, scope_id)
    if not records:
        raise ResourceNotFoundError(f"{scope}/{scope_id} has no records")
    items = [{"name": r.name or "(state)", "version": r.version,
              "updated_at": r.updated_at} for r in records]
    out.emit(items, _rows([(i["name"], f"v{i['version']}", h.when(i["updated_at"]))
                           for i in items], ("record", "version", "updated")))
    return EXIT_OK


def cmd_show(store: Store, args: argparse.Namespace, out: _Out) -> int:
    scope, scope_id = _target(args.target)
    name = check_record_name(args.resource or "")
    record = store.read(scope, scope_id, name)
    if record is None:
        what = f"resource {name!r} of " if name else ""
        raise ResourceNotFoundError(f"{what}{scope}/{scope_id} was never written")
    data = {"scope": scope, "id": scope_id, "resource": name or None,
            "version": record.version, "deleted": record.deleted, "state": record.state,
            "content": record.content, "updated_at": record.updated_at}
    if not name:
        data["resources"] = {r.name: r.version for r in store.list(scope, scope_id)
                             if r.name and not is_reserved(r.name)}
    lines = [f"{scope}/{scope_id}" + (f" resource {name}" if name else "") +
             f"  v{record.version}" + ("  (deleted)" if record.deleted else "") +
             f"  updated {h.when(record.updated_at)}",
             json.dumps(record.state, indent=2, ensure_ascii=False)]
    if record.content is not None:
        lines += ["content:", record.content]
    if data.get("resources"):
        lines.append("resources: " + ", ".join(f"{n} v{v}" for n, v in data["resources"].items()))
    out.emit(data, "\n".join(lines))
    return EXIT_OK


def cmd_history(store: Store, args: argparse.Namespace, out: _Out) -> int:
    scope, scope_id = _target(args.target)
    # cast: Store.history's annotation says ``list`` inside a class that has a ``list`` method
    entries = (store.history(
        scope, scope_id, check_record_name(args.resource or ""), limit=args.limit))
    if not entries:
        raise ResourceNotFoundError(f"{args.target} has no history")
    items = [{"version": e.version, "ts": e.ts, "operation": e.operation, "state": e.state,
              "deleted": e.deleted, "request_id": e.request_id} for e in entries]
    out.emit(items, _rows([(f"v{e.version}", h.when(e.ts), e.operation,
                            h.state_text(e.state, 100)) for e in entries],
                          ("version", "time", "operation", "state")))
    return EXIT_OK


def _not_the_store(store: Store, name: str) -> None:
    if name != "-" and is_store_file(store, name):
        raise StoreError(f"{name} is the store's own file; give another file name")


def cmd_export(store: Store, args: argparse.Namespace, out: _Out) -> int:
    _not_the_store(store, args.file)
    if args.file == "-":
        export_store(store, sys.stdout)
        return EXIT_OK
    count = _write_private(args.file, lambda fh: export_store(store, fh))
    out.emit({"records": count, "file": args.file}, f"exported {count} records to {args.file}")
    return EXIT_OK


def _write_private(path: str, write: Any) -> Any:
    """Write a file only its owner may read (0600, whatever the umask), whole or not at all.

    Missing folders on the way are created 0700. The text goes to a temporary file beside the
    target, which is renamed over it once complete: a failed export leaves no partial file and
    an existing file keeps its content until then.
    """
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for new in reversed(missing):
        os.mkdir(new, 0o700)
        os.chmod(new, 0o700)  # mkdir's mode is cut by the umask
    fd, temp = tempfile.mkstemp(prefix=".flowstate-export-", dir=os.path.dirname(target))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            result = write(fh)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return result


def cmd_import(store: Store, args: argparse.Namespace, out: _Out) -> int:
    _not_the_store(store, args.file)
    if args.file == "-":
        count = import_store(store, sys.stdin, replace=args.replace)
    else:
        with open(args.file, encoding="utf-8") as fh:
            count = import_store(store, fh, replace=args.replace)
    out.emit({"records": count}, f"imported {count} records into {store.url}")
    return EXIT_OK


def cmd_prune(store: Store, args: argparse.Namespace, out: _Out) -> int:
    report = durable.prune_store(store, trace_limit=args.trace_limit,
                                 tombstone_limit=args.tombstone_limit)
    text = (f"purged {report['runs']} runs ({report['stale_runs']} stale; kept the newest "
            f"{report['trace_limit']} per session) and {report['tombstones']} tombstones (kept "
            f"the newest {report['tombstone_limit']} per collection)")
    if args.keep is not None:
        report["removed"] = store.prune_history(args.keep)
        report["keep"] = args.keep
        text += (f"; removed {report['removed']} history versions (kept the newest {args.keep} "
                 f"per record)")
    out.emit(report, text)
    return EXIT_OK


def cmd_runs(store: Store, args: argparse.Namespace, out: _Out) -> int:
    runs = durable.list_runs(store, args.session, args.limit, status=args.status,
                             flow_kind=args.flow)
    for run in runs:
        run.pop("input", None)
    out.emit(runs, _rows([(r["request_id"], r.get("flow") or "", r.get("action") or "",
                           r["status"], h.when(r.get("started_at")), r.get("session") or "",
                           r.get("user") or "", _waits_for(r)) for r in runs],
                         ("request", "flow", "action", "status", "started", "session", "user",
                          "waiting for")))
    return EXIT_OK


def _waits_for(run: dict) -> str:
    suspension = run.get("suspension") if run.get("status") == "suspended" else None
    return (suspension.get("message") or suspension.get("title") or "input") \
        if isinstance(suspension, dict) else ""


def cmd_resume(store: Store, args: argparse.Namespace, out: _Out) -> int:
    record = durable.read_run(store, check_id(args.request_id, "request id"))
    value = None
    if args.value is not None:
        try:
            value = json.loads(args.value)
        except ValueError as exc:
            raise ValidationError(f"VALUE_JSON is not JSON ({exc}); give e.g. "
                                  f"'{{\"approved\": true}}'") from None
    where = args.flow or record.state.get("flow_module")
    if not where or where == "__main__" or where.startswith("__main__:"):
        raise InvalidIdError(f"run {args.request_id} was started from a notebook or script, so "
                             f"its flow cannot be imported here; pass --flow MODULE:NAME (or "
                             f"resume it where it ran, e.g. %flow resume {args.request_id})")
    try:
        flow = _import_flow(where, kind=record.state.get("flow"))
    except InvalidIdError as exc:
        raise InvalidIdError(f"cannot resume run {args.request_id}: {exc}; pass --flow "
                             f"MODULE:NAME") from None
    result = flow.resume(args.request_id, value, store=store, force=args.force)
    data = {"request_id": result.request_id, "status": result.status,
            "output": result.output if result.error is None else None,
            "error": None if result.error is None else
            {"type": type(result.error).__name__, "message": str(result.error)},
            "suspension": None if result.suspension is None else
            {"message": result.suspension.message, "schema": result.suspension.schema,
             "expires_at": result.suspension.expires_at}}
    text = f"run {result.request_id}: {result.status}"
    if result.error is not None:
        text += f" ({type(result.error).__name__}: {result.error})"
    elif result.suspension is not None:
        text += f", waiting again: {result.suspension.message or result.suspension.path}"
    else:
        text += f", output {json.dumps(h.preview(result.output, 200), default=str)}"
    out.emit(data, text)
    return EXIT_OK if result.status in ("ok", "suspended") else EXIT_NOT_FOUND


def cmd_doctor(store: Store, args: argparse.Namespace, out: _Out) -> int:
    report = store.doctor()
    problems = report.get("problems", [])
    text = "\n".join([f"{k}: {v}" for k, v in report.items() if k != "problems"] +
                     ([f"PROBLEM: {p}" for p in problems] or ["healthy"]))
    out.emit(report, text)
    return EXIT_NOT_FOUND if problems else EXIT_OK


def _import_flow(where: str, kind: str | None = None) -> Any:
    """The flow ``MODULE:NAME`` names (``NAME`` may be dotted), or, given only ``MODULE`` and a
    ``kind``, the one flow of that kind the module holds. The module is looked for in the current
    folder first. A mistake is an :class:`InvalidIdError` saying what to give instead."""
    module_name, sep, name = where.partition(":")
    if not module_name or ((sep or kind is None) and not name):
        raise InvalidIdError(f"{where!r}: give MODULE:FLOW, e.g. app:flow for the flow bound to "
                             f"`flow` in app.py")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidIdError(f"cannot import module {module_name!r}: {exc}") from None
    from .flows.flow import Flow  # here: the other commands need not load flows
    if not name:
        found = [f for f in vars(obj).values() if isinstance(f, Flow) and f.kind == kind]
        if len(found) != 1:
            raise InvalidIdError(f"{where} holds {len(found)} flows of kind {kind!r}")
        return found[0]
    for part in name.split("."):
        if not hasattr(obj, part):
            raise InvalidIdError(f"module {module_name!r} has no {name!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Flow):
        raise InvalidIdError(f"{where} is a {type(obj).__name__}, not a flow: bind the result of "
                             f"fs.define_flow(...) to a name and give that name")
    return obj


def cmd_serve(store: Store, args: argparse.Namespace, out: _Out) -> int:
    try:
        flow = _import_flow(args.target)
        from .serve import serve  # the serve extra: needed by this command only
        serve(flow, store=store, host=args.host, port=args.port, tokens=args.tokens)
    except (ValueError, ImportError) as exc:
        print(f"flowstate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"flowstate: cannot listen on {args.host}:{args.port}: "
              f"{exc.strerror or exc} (is another server using it? pick another --port)",
              file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (``flowstate: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"flowstate: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    """A ``--limit`` / ``--keep`` count: a whole number from 1 to 2**31 - 1."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if not 1 <= number < 2**31:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not between 1 and 2147483647")
    return number


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS,
                        help="store URL (default: $FLOWSTATE_STORE or .flowstate/flowstate.db)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of text")
    parser = _Parser(
        prog="flowstate", parents=[common], epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Look at, move and look after a flowstate store.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    p = add("ls", cmd_ls, "list scopes, the instances of a scope, or the records of one")
    p.add_argument("what", nargs="?", help="SCOPE or SCOPE/ID (e.g. session, session/s1)")
    p = add("show", cmd_show, "show the state (and resources) of SCOPE/ID")
    p.add_argument("target", help="SCOPE/ID, e.g. session/s1")
    p.add_argument("--resource", help="show this resource instead of the scope state")
    p = add("history", cmd_history, "list the kept versions of SCOPE/ID (newest first)")
    p.add_argument("target", help="SCOPE/ID, e.g. user/alice")
    p.add_argument("--resource", help="a resource of that scope instead of its state")
    p.add_argument("--limit", type=_count, default=20, help="how many versions (default 20)")
    p = add("export", cmd_export, "write every record, with versions and history, as JSON Lines")
    p.add_argument("file", help="output file, or - for stdout")
    p = add("import", cmd_import, "load an export (refuses records that already exist)")
    p.add_argument("file", help="input file, or - for stdin")
    p.add_argument("--replace", action="store_true", help="overwrite records that exist")
    p = add("prune", cmd_prune, "apply retention (old runs and traces, tombstones); with "
                                "--keep also drop old history versions")
    p.add_argument("--keep", type=_count, help="history versions to keep per record (>= 1)")
    p.add_argument("--trace-limit", type=_count, help="ended runs to keep per session "
                                                      "(default: the store's, 100)")
    p.add_argument("--tombstone-limit", type=_count, help="tombstones to keep per collection "
                                                          "(default: the store's, 100)")
    p = add("runs", cmd_runs, "list runs (newest first), e.g. those waiting: --status suspended")
    p.add_argument("--status", choices=("running", "ok", "error", "suspended", "interrupted"))
    p.add_argument("--session", help="only this session's runs")
    p.add_argument("--flow", help="only runs of this flow kind")
    p.add_argument("--limit", type=_count, default=50, help="how many (default 50)")
    p = add("resume", cmd_resume, "continue a suspended or interrupted run (imports its flow)")
    p.add_argument("request_id", help="the run's request id (flowstate runs lists them)")
    p.add_argument("value", nargs="?", help="for a suspended run: the value, as JSON")
    p.add_argument("--flow", help="MODULE:NAME of the flow (default: the module that defined "
                                  "it, as the run recorded)")
    p.add_argument("--force", action="store_true",
                   help="resume an interrupted run even if its writes cannot all be checked")
    add("doctor", cmd_doctor, "check integrity, schema version, journal mode and sizes")
    p = add("serve", cmd_serve, "serve a flow over HTTP: its routes, live client data and a page")
    p.add_argument("target", help="MODULE:FLOW, e.g. app:flow (the module is found from here)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; another needs --tokens)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--tokens", metavar="FILE",
                   help="bearer tokens, one 'TOKEN USER' a line or a JSON object "
                        "(default: the file $FLOWSTATE_TOKENS names; none: one local user)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowstate`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    out = _Out(getattr(args, "json", False))
    try:
        store = open_store(getattr(args, "store", None))
    except StoreError as exc:
        print(f"flowstate: {exc}", file=sys.stderr)
        return EXIT_STORE
    try:
        return args.fn(store, args, out)
    except StoreError as exc:
        print(f"flowstate: {exc}", file=sys.stderr)
        return EXIT_STORE
    except (ResourceNotFoundError, InvalidIdError) as exc:
        print(f"flowstate: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND if isinstance(exc, ResourceNotFoundError) else EXIT_USAGE
    except (ResourceAlreadyExistsError, ValidationError, RunStateError) as exc:
        print(f"flowstate: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except FlowStateError as exc:
        print(f"flowstate: {exc}", file=sys.stderr)
        return EXIT_STORE
    except BrokenPipeError:
        return _pipe_closed()
    except KeyboardInterrupt:
        print("flowstate: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"flowstate: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    finally:
        store.close()


def _pipe_closed() -> int:
    """The reader of stdout went away (``| head``): stop quietly. Python would otherwise
    complain again when it flushes stdout at exit, so stdout now goes nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (a test's StringIO)
        pass
    return EXIT_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
