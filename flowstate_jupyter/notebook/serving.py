"""``%flow serve``: the current flow over HTTP from the kernel's background
(docs/guide.md, 'Serve a flow over HTTP').

``%flow serve [--port N] [--flow NAME]`` starts uvicorn on a thread of this kernel, on
127.0.0.1, for this kernel's user (no tokens, unless ``FLOWSTATE_TOKENS`` names a file) and
store, and prints the page's URL opened on this notebook's session — the browser and the notebook
then watch the same records. ``%flow serve --stop`` stops it; so does unloading the extension.
"""

from __future__ import annotations

import re
from typing import Any

from IPython.core.error import UsageError

__all__ = ["serve_command"]

_PORT = re.compile(r"--port(?:=|\s+)(\S+)")


def serve_command(kernel: Any, rest: str, options: dict) -> None:
    """Start or stop (``--stop``) this kernel's server; prints what it did."""
    port_text = None
    match = _PORT.search(rest)
    if match:
        port_text = match.group(1)
        rest = rest[:match.start()] + rest[match.end():]
    words = rest.split()
    stop = "--stop" in words
    unknown = [w for w in words if w != "--stop"]
    if unknown:
        raise UsageError(f"%flow serve [--port N] [--flow NAME] | --stop; not "
                         f"{' '.join(unknown)!r}")
    server = getattr(kernel, "server", None)
    if stop:
        if server is None or not server.running:
            print("no server is running in this kernel")
        else:
            server.stop()
            print(f"stopped serving at {server.url}")
        kernel.server = None
        return
    if server is not None and server.running:
        raise UsageError(f"already serving at {server.url}; %flow serve --stop first")
    try:
        port = 8000 if port_text is None else int(port_text)
    except ValueError:
        raise UsageError(f"--port takes a number, not {port_text!r}") from None
    name = options.get("flow")
    flow = kernel.flow(name)
    session = kernel.session(name)  # exists in the store before the page asks for it
    from ..serve import start  # the serve extra: only this command needs it
    try:
        server = start(flow, store=kernel.store, port=port, local_user=kernel.user)
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}; pick "
                         f"another port with %flow serve --port N") from None
    kernel.server = server
    print(f"serving flow {flow.kind!r} at {server.url}#session={session.id}\n"
          f"(this notebook's session; as user {kernel.user!r}; %flow serve --stop stops it)")
