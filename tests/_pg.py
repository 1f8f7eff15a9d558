"""A throwaway PostgreSQL server for the tests, started from Debian's ``postgresql`` package.

``TempPostgres(bindir).start()`` runs ``initdb`` into a fresh temporary folder, starts the server
on a free loopback port with its unix socket in that folder (trust authentication; fsync and
autovacuum off: it is thrown away), creates the database ``flowstate_test`` and returns its URL.
``stop()`` stops the server and removes the folder. initdb refuses to run as root, so as root the
server runs as the ``postgres`` OS user Debian's package creates (or a dedicated ``flowstate-pg``
system user when that is missing).

``TempPostgres(bindir, durable=True)`` keeps fsync, ``synchronous_commit`` and
``full_page_writes`` on, so a crash loses nothing the server acknowledged: the server the crash
tests kill (its folder is in ``/dev/shm`` when there is one, so its fsyncs are cheap).
``settings={"autovacuum": "on"}`` passes more server settings (``-c name=value``); the
benchmarks use it to run a server configured as in production.
``crash()`` kills it with SIGKILL (the postmaster alone, or every server process at once) and
waits until all its processes are gone; ``restart()`` starts it again on the same port, running
crash recovery.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
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


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _gone(pid: int) -> bool:
    """Has ``pid`` exited (a zombie nobody reaps counts as exited)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


class TempPostgres:
    def __init__(self, bindir: Path, *, durable: bool = False,
                 settings: dict[str, str] | None = None) -> None:
        self.bindir = Path(bindir)
        self.durable = durable
        self.settings = dict(settings or {})
        self.user = _server_user()
        self.dir: Path | None = None
        self.port: int | None = None
        self.url: str | None = None
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
        # A server the tests crash lives in memory when it can: its fsyncs are then cheap (crash
        # recovery starts by syncing every file), and killing processes loses nothing the page
        # cache or a disk would have kept.
        shm = "/dev/shm" if self.durable and os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="flowstate-pg-", dir=shm))
        atexit.register(self.stop)
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        last_error: ServerError | None = None
        for _ in range(3):  # a free port can be taken between choosing and binding it
            self.port = _free_port()
            try:
                self._pg_ctl_start()
            except ServerError as exc:
                last_error = exc
                continue
            self.started = True
            break
        else:
            raise ServerError(f"{last_error}\n{self.log_tail()}")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE)
        self.url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"
        return self.url

    def _pg_ctl_start(self) -> None:
        durability = "on" if self.durable else "off"
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   f"-c fsync={durability} -c synchronous_commit={durability} "
                   f"-c full_page_writes={durability} -c autovacuum=off "
                   f"-c max_connections=200")
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-w", "-t", "30", "-o", options, "start")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def crash(self, *, everything: bool = False) -> None:
        """SIGKILL the postmaster (``everything``: and every server process with it), then wait
        until every process of the server has exited."""
        postmaster = self.postmaster_pid()
        children = _children(postmaster)
        os.kill(postmaster, signal.SIGKILL)
        if everything:
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.started = False
        deadline = time.monotonic() + 30
        # Backends notice the postmaster's death and exit on their own (they may first finish
        # the statement they are running, COMMIT included).
        while not all(_gone(pid) for pid in [postmaster, *children]):
            if time.monotonic() > deadline:
                raise ServerError(f"server processes still running 30 s after the postmaster "
                                  f"{postmaster} was killed")
            time.sleep(0.01)
        # The dead postmaster may stay a zombie for a while (no init reaps it here), and a new
        # postmaster takes a live-looking pid in a lock file for a running server. The lock
        # files are stale: remove them. (The shared-memory interlock still stops a new
        # postmaster while any old process is attached.)
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        (self.dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def restart(self) -> None:
        """Start the server again after :meth:`crash` (same folder and port)."""
        deadline = time.monotonic() + 90  # crash recovery is slow on a busy machine
        while True:  # a backend forked just before the kill may still hold shared memory
            try:
                self._pg_ctl_start()
                break
            except ServerError as exc:
                if time.monotonic() > deadline:
                    raise ServerError(f"{exc}\n{self.log_tail()}") from None
                time.sleep(0.1)
        self.started = True

    def log_tail(self, chars: int = 1500) -> str:
        """The end of the server's log, to say why it would not start."""
        log = (self.dir / "server.log") if self.dir is not None else None
        return log.read_text(errors="replace")[-chars:] if log and log.exists() else ""

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
