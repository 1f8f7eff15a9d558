"""The ``flowstate`` command, run through its real entry point in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _helpers import python_env

import flowstate_jupyter as fs
from flowstate_jupyter.stores.sqlite import SCHEMA_VERSION


def flowstate(*args: str, store: str | None = None, stdin: str | None = None
              ) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flowstate_jupyter.cli"]
    if store is not None:
        command += ["--store", store]
    return subprocess.run(command + list(args), env=python_env(), capture_output=True,
                          text=True, input=stdin, timeout=60)


@pytest.fixture
def url(tmp_path):
    """A SQLite store holding a session with state, a resource and some history."""
    url = f"sqlite:///{tmp_path}/cli.db"
    store = fs.open_store(url)
    session = fs.ScopeHandle(store, "session", "s1", resources={
        "plan": fs.define_resource(writable=True)})
    store.write("session", "s1", "$meta", {"user": "alice", "flow": "assistant"})
    session.patch_state(mode="agent")
    session.inc_state(count=3)
    session.resources.plan.patch_state(goal="ship")
    session.resources.plan.write_content("# Plan")
    fs.ScopeHandle(store, "user", "alice").patch_state(theme="dark")
    store.close()
    return url


def test_help_teaches_the_commands_and_exit_codes():
    result = flowstate("--help")
    assert result.returncode == 0
    for word in ("ls", "show", "history", "export", "import", "prune", "doctor", "exit codes",
                 "--store", "--json"):
        assert word in result.stdout


def test_ls_counts_instances_per_scope(url):
    result = flowstate("ls", "--json", store=url)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"request": 0, "session": 1, "user": 1, "project": 0}


def test_ls_of_a_scope_lists_sessions_with_user_and_flow(url):
    result = flowstate("ls", "session", store=url)
    assert result.returncode == 0
    assert "s1" in result.stdout and "alice" in result.stdout and "assistant" in result.stdout


def test_ls_of_an_instance_lists_its_records_and_versions(url):
    items = json.loads(flowstate("ls", "session/s1", "--json", store=url).stdout)
    assert {i["name"]: i["version"] for i in items} == {"(state)": 2, "$meta": 1, "plan": 2}


def test_show_prints_state_and_resources(url):
    result = flowstate("show", "session/s1", store=url)
    assert result.returncode == 0
    assert '"mode": "agent"' in result.stdout and "plan v2" in result.stdout
    data = json.loads(flowstate("show", "session/s1", "--resource", "plan", "--json",
                                store=url).stdout)
    assert (data["state"], data["content"], data["version"]) == ({"goal": "ship"}, "# Plan", 2)


def test_history_lists_versions_newest_first(url):
    items = json.loads(flowstate("history", "session/s1", "--json", store=url).stdout)
    assert [(i["version"], i["operation"]) for i in items] == [(2, "increment"), (1, "patch")]


def test_export_then_import_into_another_store_keeps_versions_and_history(url, tmp_path):
    dump = tmp_path / "dump.jsonl"
    assert flowstate("export", str(dump), store=url).returncode == 0
    copy = f"sqlite:///{tmp_path}/copy.db"
    result = flowstate("import", str(dump), "--json", store=copy)
    assert result.returncode == 0 and json.loads(result.stdout) == {"records": 4}
    from flowstate_jupyter.stores.transfer import records_equal
    assert records_equal(fs.open_store(url), fs.open_store(copy)) == []
    again = flowstate("import", str(dump), store=copy)
    assert again.returncode == 4 and "already exists" in again.stderr


def test_export_to_stdout_and_import_from_stdin(url, tmp_path):
    exported = flowstate("export", "-", store=url)
    assert exported.stdout.startswith('{"format": "flowstate-export"')
    result = flowstate("import", "-", store=f"sqlite:///{tmp_path}/c.db", stdin=exported.stdout)
    assert result.returncode == 0 and "imported 4 records" in result.stdout


def test_prune_keeps_the_newest_versions(url):
    result = flowstate("prune", "--keep", "1", "--json", store=url)
    assert result.returncode == 0 and json.loads(result.stdout)["removed"] == 2
    assert len(fs.open_store(url).history("session", "s1")) == 1
    assert flowstate("prune", "--keep", "0", store=url).returncode == 2


def test_doctor_reports_health_and_exits_zero(url):
    result = flowstate("doctor", "--json", store=url)
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert (report["integrity"], report["journal_mode"], report["schema_version"]) == \
        ("ok", "wal", SCHEMA_VERSION)
    assert report["records"] == 4 and report["problems"] == []


def test_doctor_exits_one_when_it_finds_a_problem(url, tmp_path):
    (tmp_path / "cli.db").chmod(0o644)
    result = flowstate("doctor", store=url)
    assert result.returncode == 1 and "readable by others" in result.stdout


@pytest.mark.parametrize("args, code, message", [
    (("show", "nope/x"), 2, "give SCOPE/ID"),
    (("show", "session/missing"), 1, "never written"),
    (("history", "user/nobody"), 1, "no history"),
    (("bogus",), 2, "invalid choice"),
])
def test_mistakes_exit_with_the_documented_codes(url, args, code, message):
    result = flowstate(*args, store=url)
    assert result.returncode == code
    assert message in result.stderr


def test_a_file_that_is_not_a_store_exits_three_and_is_untouched(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    result = flowstate("ls", store=str(bogus))
    assert result.returncode == 3 and "not a SQLite database" in result.stderr
    assert bogus.read_text() == "hello"


@pytest.mark.postgres
def test_a_sqlite_export_moves_to_postgresql_through_the_command(url, tmp_path, pg_backend):
    dump = tmp_path / "dump.jsonl"
    flowstate("export", str(dump), store=url)
    result = flowstate("import", str(dump), store=pg_backend.url)
    assert result.returncode == 0, result.stderr
    from flowstate_jupyter.stores.transfer import records_equal
    assert records_equal(fs.open_store(url), pg_backend.open()) == []
    shown = json.loads(flowstate("show", "session/s1", "--json", store=pg_backend.url).stdout)
    assert shown["version"] == 2


# -- import: all or nothing -------------------------------------------------------------------

def test_a_refused_import_exits_four_names_the_line_and_writes_nothing(url, tmp_path):
    dump = tmp_path / "dump.jsonl"
    flowstate("export", str(dump), store=url)
    lines = dump.read_text().splitlines()
    bad = json.loads(lines[2])
    bad["version"] = 2**80
    dump.write_text("\n".join([*lines[:2], json.dumps(bad), *lines[3:]]) + "\n")
    copy = f"sqlite:///{tmp_path}/copy.db"
    result = flowstate("import", str(dump), store=copy)
    assert result.returncode == 4, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("flowstate: line 3 of the export") and "version" in \
        result.stderr
    assert fs.open_store(copy).list(include_deleted=True) == []


def test_importing_a_binary_file_exits_four(url, tmp_path):
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff" * 20)
    result = flowstate("import", str(junk), store=url)
    assert result.returncode == 4 and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


# -- export: owner-only ------------------------------------------------------------------------

def _umask_022(code: str) -> str:
    return f"import os, sys\nos.umask(0o022)\n{code}"


def test_an_export_is_created_owner_only_under_umask_022_and_so_are_its_folders(url, tmp_path):
    target = tmp_path / "backups" / "daily" / "dump.jsonl"
    code = _umask_022(f"from flowstate_jupyter.cli import main\n"
                      f"sys.exit(main(['--store', {url!r}, 'export', {str(target)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert target.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "backups" / "daily").stat().st_mode & 0o777 == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["dump.jsonl"]  # no temporary left


def test_an_export_over_a_readable_file_makes_it_owner_only(url, tmp_path):
    target = tmp_path / "dump.jsonl"
    target.write_text("old")
    target.chmod(0o644)
    assert flowstate("export", str(target), store=url).returncode == 0
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_text().startswith('{"format": "flowstate-export"')


def test_export_piped_into_head_stops_quietly(url, tmp_path):
    store = fs.open_store(url)
    for i in range(300):  # more than a pipe buffer of output
        fs.ScopeHandle(store, "user", f"u{i}").patch_state(note="x" * 200)
    store.close()
    command = f"{sys.executable} -m flowstate_jupyter.cli --store {url} export - | head -c 10"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=python_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.stdout == '{"format":'
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as documented


@pytest.mark.parametrize("args, code, message", [
    (("history", "user/alice", "--limit", "0"), 2, "between 1 and"),
    (("history", "user/alice", "--limit", "99999999999999999999999"), 2, "between 1 and"),
    (("prune", "--keep", "x"), 2, "not a whole number"),
    (("show", "session/s1", "--resource", "../x"), 2, "'../x'"),
    (("--store", "sqlite:///x.db?timeout=nan", "ls"), 3, "timeout"),
    (("--store", "memory://?history_limit=-1", "ls"), 3, "history_limit"),
])
def test_bad_arguments_are_one_line_with_the_documented_code(url, args, code, message):
    result = flowstate(*args, store=None if args[0] == "--store" else url)
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
