"""A throwaway PostgreSQL server for the tests, started from Debian's ``postgresql`` package.

``TempPostgres(bindir).start()`` runs ``initdb`` into a fresh temporary folder, starts the server
on a free loopback port with its unix socket in that folder (trust authentication; fsync and
autovacuum off: it is thrown away), creates the database ``flowstate_test`` and returns its URL.
``stop()`` stops the server and removes the folder. initdb refuses to run as root, so as root the server runs as the
``postgres`` OS user Debian's package creates (or a dedicated ``flowstate-pg`` system user when
that is missing).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DATABASE = "flowstate_test"
SUPERUSER = "postgres"


class ServerError(RuntimeError):
    """The throwaway server could not be set up."""


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with initdb and pg_ctl, else PATH's."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        major = re.search(r"/postgresql/(\d+)", initdb)
        if (bindir / "pg_ctl").exists() and major:
            found.append((int(major.group(1)), bindir))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: ``None`` = this user (not root); as root, an unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "flowstate-pg"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    nologin = shutil.which("nologin") or "/bin/false"
    result = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", nologin,
                             "flowstate-pg"], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServerError(f"running as root, there is no 'postgres' user and creating "
                          f"'flowstate-pg' failed: {result.stderr.strip()}")
    return pwd.getpwnam("flowstate-pg")


class TempPostgres:
    def __init__(self, bindir: Path) -> None:
        self.bindir = Path(bindir)
        self.user = _server_user()
        self.dir: Path | None = None
        self.port: int | None = None
        self.started = False

    @property
    def data(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.dir)
        result = subprocess.run([str(self.bindir / args[0]), *args[1:]], cwd=self.dir, env=env,
                                capture_output=True, text=True, timeout=timeout, **kwargs)
        if result.returncode != 0:
            raise ServerError(f"{args[0]} failed ({result.returncode}): "
                              f"{(result.stderr or result.stdout).strip()[-2000:]}")
        return result

    def start(self) -> str:
        self.dir = Path(tempfile.mkdtemp(prefix="flowstate-pg-"))
        atexit.register(self.stop)
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        last_error: ServerError | None = None
        for _ in range(3):  # a free port can be taken between choosing and binding it
            self.port = _free_port()
            options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                       f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       f"-c autovacuum=off "
                       f"-c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"),
                          "-w", "-t", "30", "-o", options, "start")
            except ServerError as exc:
                last_error = exc
                continue
            self.started = True
            break
        else:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ServerError(f"{last_error}\n{tail}")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE)
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (ServerError, subprocess.TimeoutExpired):
            pass
        finally:
            self.started = False
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
