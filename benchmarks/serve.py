"""Serving a flow over HTTP: the run-action route against bare Starlette routes, SSE fan-out,
and the server's memory under churn.

One uvicorn server runs in a child process (one core for it, one for the client here), serving
``flow.asgi_app()`` on a SQLite file with two bare routes added to the same application:

* ``POST /bare/run/{id}`` — what a Starlette user writes by hand: ``await flow.arun(...)`` on the
  event loop, return the output. The same store writes as our route (request record, the
  handler's ``inc_state``, the session's touch), without our layer: no identity or ownership
  check, no worker thread, no client data in the answer.
* ``POST /bare/write/{id}`` — only the handler's one ``inc_state``, on the event loop: the floor.
* ``/inline/...`` — our app again with ``workers=0``: runs on the server's loop, like the bare
  route, so the difference between it and ours is the hand-over to a worker thread and back.

A keep-alive ``httpx`` client calls ours and the bare routes interleaved (``_common.interleaved``)
one request at a time; rows give the median per request (requests/s in the notes). The target,
ours ≤ 1.5 × the bare run at the median, is on the bare-run row; the bare-write row shows what the
run itself costs (request records, session check, events: ``flows.py`` measures it alone).

SSE fan-out: 100 clients (raw asyncio sockets, so the client side costs little) hold
``GET /sessions/{id}/events`` open on one session; for each commit we take the time from the
commit (its ``ts`` in the store's history) to the moment the last of the 100 clients has the
event. Two kinds of commit: made by the server (a run over HTTP), and made by this process
writing to the same file (the server's store watcher notices it; SQLite polls every 0.2 s, so
that row is mostly the poll). p50 and p99 are reported; the second is checked against the one-
second promise.

Memory: the server's resident set size after a warm-up, and again after every client of many
sessions has connected and gone away several times; the growth is checked to stay small.

Run alone: ``python benchmarks/serve.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # _common, and the package from a checkout
from _common import check_row, interleaved, percentile, row, standalone  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import flowstate_jupyter as fs  # noqa: E402

TARGET = 1.5
USER = "bench"
CLIENTS = 100


class Counter(BaseModel):
    count: int = 0


class Bump(BaseModel):
    by: int = 1


@fs.handler(session_state=Counter)
def bump(input: Bump, ctx: Any) -> dict:
    ctx.session.inc_state(count=input.by)
    return {"bumped": input.by}


def make_flow() -> fs.Flow:
    return fs.define_flow("bench", {"bump": fs.action(bump, input=Bump)},
                          session=fs.scope(client_data={"count": lambda c: c.state.count}))


# ------------------------------------------------------------------------------ server side

def server_main(store_url: str) -> None:
    """The child process: our app plus the two bare routes, on a free port (printed)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from flowstate_jupyter.serve import asgi_app
    from flowstate_jupyter.serve._server import BackgroundServer, bind

    flow = make_flow()
    store = fs.open_store(store_url)
    app = flow.asgi_app(store=store)
    handles: dict[str, fs.ScopeHandle] = {}

    async def bare_run(request: Request) -> JSONResponse:
        body = await request.json()
        result = await flow.arun("bump", body, session=request.path_params["id"], user=USER,
                                 store=store)
        return JSONResponse({"output": result.output})

    async def bare_write(request: Request) -> JSONResponse:
        session_id = request.path_params["id"]
        body = await request.json()
        handle = handles.get(session_id) or handles.setdefault(
            session_id, fs.ScopeHandle(store, "session", session_id, state=Counter))
        handle.inc_state(count=body.get("by", 1))
        return JSONResponse({"output": {"bumped": body.get("by", 1)}})

    inline = asgi_app(flow, store=store, workers=0)  # runs on the server's loop, no hand-over
    app.router.routes[:0] = [Route("/bare/run/{id}", bare_run, methods=["POST"]),
                             Route("/bare/write/{id}", bare_write, methods=["POST"]),
                             Mount("/inline", inline)]
    server = BackgroundServer(app, bind("127.0.0.1", 0))
    print(server.url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop()
    store.close()


def _start_server(store_url: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "FLOWSTATE_USER": USER, "PYTHONUNBUFFERED": "1"}
    env.pop("FLOWSTATE_TOKENS", None)
    proc = subprocess.Popen([sys.executable, __file__, "--server", store_url], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"the benchmark server did not start (said {url!r})")
    return proc, url


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------ requests/s

def _requests(url: str, sessions: dict[str, str], calls: int) -> list[dict]:
    import httpx
    paths = {"ours": f"sessions/{sessions['ours']}/actions/bump",
             "inline": f"inline/sessions/{sessions['inline']}/actions/bump",
             "bare_run": f"bare/run/{sessions['bare_run']}",
             "bare_write": f"bare/write/{sessions['bare_write']}"}
    with httpx.Client(base_url=url, timeout=30, verify=False) as http:
        def call(name: str):
            def one(i: int) -> None:
                response = http.post(paths[name], json={"by": 1})
                if response.status_code != 200:
                    raise RuntimeError(f"{name}: {response.status_code} {response.text}")
            return one
        samples = interleaved({name: call(name) for name in paths}, warmup=max(20, calls // 20),
                              calls=calls, chunk=10)
    p50 = {name: statistics.median(s) / 1e6 for name, s in samples.items()}  # ms
    rps = {name: 1e9 / statistics.fmean(s) for name, s in samples.items()}
    p99 = {name: percentile(s, 99) / 1e6 for name, s in samples.items()}
    group = "serve: run-action route"
    note = (f"requests/s: ours {rps['ours']:,.0f}, ours inline {rps['inline']:,.0f}, bare run "
            f"{rps['bare_run']:,.0f}, bare write {rps['bare_write']:,.0f}; p99 ms: ours "
            f"{p99['ours']:.2f}, inline {p99['inline']:.2f}, bare run {p99['bare_run']:.2f}, "
            f"bare write {p99['bare_write']:.2f}; {calls} requests each; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return [
        row("serve.run_action_vs_bare_run", p50["ours"], p50["bare_run"], "ms/request",
            target=TARGET, group=group, note=note),
        row("serve.run_action_inline_vs_bare_run", p50["inline"], p50["bare_run"],
            "ms/request", group=group,
            note="reference: workers=0, the run on the server's loop as the bare route does; the "
                 "gap to the row above is the hand-over to a worker thread and back"),
        row("serve.run_action_vs_bare_write", p50["ours"], p50["bare_write"], "ms/request",
            group=group, note="reference: the bare route writes once and runs no flow"),
    ]


# ------------------------------------------------------------------------------ fan-out

async def _fanout(url: str, store: Any, flow: fs.Flow, session_id: str, commits: int,
                  http: Any) -> dict[str, list[float]]:
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    arrivals: list[dict[int, float]] = [{} for _ in range(CLIENTS)]
    opened = 0
    ready = asyncio.Event()

    async def reader(index: int) -> None:
        nonlocal opened
        reader_, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /sessions/{session_id}/events HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     .encode())
        await writer.drain()
        try:
            seen_snapshot = False
            while True:
                line = await reader_.readline()
                if not line:
                    return
                if line.startswith(b"event: snapshot") and not seen_snapshot:
                    seen_snapshot = True
                    opened += 1
                    if opened == CLIENTS:
                        ready.set()
                elif line.startswith(b"data: {\"changed\""):
                    count = json.loads(line[6:])["changed"]["client_data"]["session"]["count"]
                    arrivals[index][count] = time.time()
        finally:
            writer.close()

    tasks = [asyncio.create_task(reader(i)) for i in range(CLIENTS)]
    await asyncio.wait_for(ready.wait(), 60)
    session = flow.session(session_id, store=store)
    latencies: dict[str, list[float]] = {"in_server": [], "other_process": []}
    loop = asyncio.get_running_loop()
    for i in range(commits * 2):
        kind = "in_server" if i % 2 == 0 else "other_process"
        if kind == "in_server":
            await loop.run_in_executor(None, lambda: http.post(
                f"sessions/{session_id}/actions/bump", json={"by": 1}).raise_for_status())
        else:
            await loop.run_in_executor(None, lambda: session.inc_state(count=1))
        entry = store.history("session", session_id, "", limit=1)[0]
        count, committed = entry.state["count"], entry.ts
        deadline = time.monotonic() + 5
        while any(count not in a for a in arrivals) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        missing = sum(count not in a for a in arrivals)
        if missing:
            raise RuntimeError(f"{missing} of {CLIENTS} clients never got count {count}")
        latencies[kind].append((max(a[count] for a in arrivals) - committed) * 1000)
        await asyncio.sleep(0.05)  # let the machine settle between commits
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies


def _fanout_rows(url: str, store: Any, flow: fs.Flow, session_id: str, commits: int) -> list:
    import httpx
    with httpx.Client(base_url=url, timeout=30, verify=False) as http:
        latencies = asyncio.run(_fanout(url, store, flow, session_id, commits, http))
    group = f"serve: SSE fan-out to {CLIENTS} clients"
    rows = []
    for kind, label in (("in_server", "a run through the server"),
                        ("other_process", "another process writing the file (0.2 s poll)")):
        values = latencies[kind]
        p50, p99 = statistics.median(values), percentile(values, 99)
        note = (f"commit → last of {CLIENTS} clients has the event, commits by {label}; "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(values)} commits")
        rows.append({"name": f"serve.sse_fanout_{CLIENTS}.{kind}.p50", "value": round(p50, 2),
                     "unit": "ms", "group": group, "note": note})
        rows.append(check_row(f"serve.sse_fanout_{CLIENTS}.{kind}.p99", round(p99, 2), "ms",
                              limit=1000, group=group,
                              note="checked against the one-second promise"))
    return rows


# ------------------------------------------------------------------------------ memory

async def _churn(url: str, sessions: list[str], rounds: int) -> None:
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)

    async def visit(session_id: str) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /sessions/{session_id}/events HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     .encode())
        await writer.drain()
        while not (await reader.readline()).startswith(b"event: snapshot"):
            pass
        writer.close()  # gone without a word, as a closed tab

    for _ in range(rounds):
        for start in range(0, len(sessions), 50):
            await asyncio.gather(*(visit(s) for s in sessions[start:start + 50]))


def _memory_rows(proc: subprocess.Popen, url: str, store: Any, flow: fs.Flow,
                 sessions: int, rounds: int) -> list[dict]:
    ids = [f"churn-{i}" for i in range(sessions)]
    for session_id in ids:
        flow.session(session_id, user=USER, store=store)
    asyncio.run(_churn(url, ids[:50], 1))  # warm-up: code paths, caches, thread pools
    time.sleep(0.5)
    before = _rss_mb(proc.pid)
    asyncio.run(_churn(url, ids, rounds))
    time.sleep(0.5)
    after = _rss_mb(proc.pid)
    group = "serve: memory"
    return [check_row("serve.rss_growth_after_churn", round(after - before, 1), "MB",
                      limit=20, group=group,
                      note=f"server RSS {before:.1f} MB → {after:.1f} MB after {rounds} rounds of "
                           f"a stream opened and dropped on each of {sessions} sessions "
                           f"({rounds * sessions:,} streams)")]


# ------------------------------------------------------------------------------ run

def run(quick: bool = False) -> list[dict]:
    calls = 100 if quick else 3000
    commits = 5 if quick else 50
    sessions, rounds = (60, 2) if quick else (1000, 5)
    flow = make_flow()
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-serve-") as folder:
        url_store = f"sqlite:///{Path(folder) / 'serve.db'}"
        store = fs.open_store(url_store)
        ids = {name: f"{name.replace('_', '-')}-1"
               for name in ("ours", "inline", "bare_run", "bare_write", "fanout")}
        for session_id in ids.values():
            flow.session(session_id, user=USER, store=store)
        proc, url = _start_server(url_store)
        try:
            rows = _requests(url, ids, calls)
            rows += _fanout_rows(url, store, flow, ids["fanout"], commits)
            rows += _memory_rows(proc, url, store, flow, sessions, rounds)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            store.close()
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--server"]:
        server_main(sys.argv[2])
    else:
        sys.exit(standalone(run, sys.argv[1:]))
