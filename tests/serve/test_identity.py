"""Tokens: the file formats, what is refused and why, and ``FLOWSTATE_TOKENS``."""

from __future__ import annotations

from pathlib import Path

import pytest
from _serving import ALICE, client

from flowstate_jupyter.serve import load_tokens
from flowstate_jupyter.serve._identity import Identity

GOOD = "a" * 16


def test_a_tokens_file_is_token_user_lines_or_a_json_object(tmp_path: Path) -> None:
    lines = tmp_path / "tokens.txt"
    lines.write_text(f"# who may call\n\n{GOOD}  alice\n{'b' * 40} bob@example.com\n")
    assert load_tokens(lines) == {GOOD: "alice", "b" * 40: "bob@example.com"}
    as_json = tmp_path / "tokens.json"
    as_json.write_text(f'{{"{GOOD}": "alice"}}')
    assert load_tokens(str(as_json)) == {GOOD: "alice"}
    assert load_tokens({GOOD: "carol"}) == {GOOD: "carol"}


@pytest.mark.parametrize(("text", "words"), [
    ("short alice\n", "at least 16 characters"),
    (f"{GOOD} not/an/id\n", "line 1"),
    (f"{GOOD} alice\n{GOOD} bob\n", "given twice"),
    (f"{GOOD}\n", "expected 'TOKEN USER'"),
    (f"{GOOD} alice extra\n", "found 3"),
    ("# nothing\n", "empty"),
    ('{"' + GOOD + '": 3}', "strings"),
    ('{"' + GOOD + '": "alice",}', "not a JSON object"),
])
def test_a_tokens_file_it_cannot_use_is_refused_saying_where(tmp_path: Path, text: str,
                                                              words: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match=words) as caught:
        load_tokens(path)
    message = str(caught.value)
    if "empty" not in words:
        assert str(path) in message
    assert GOOD not in message  # a token is a secret: never echoed


def test_a_token_names_its_user_and_nothing_else(tmp_path: Path) -> None:
    identity = Identity({GOOD: "alice", "c" * 20: "carol"})
    assert identity.requires_tokens and identity.local_user is None
    assert identity.user_for(GOOD) == "alice"
    assert identity.user_for("c" * 20) == "carol"
    for wrong in (None, "", GOOD[:-1], GOOD + "a", GOOD.upper()):
        assert identity.user_for(wrong) is None


def test_without_tokens_one_local_user_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWSTATE_TOKENS", raising=False)
    monkeypatch.setenv("FLOWSTATE_USER", "dana")
    identity = Identity()
    assert not identity.requires_tokens
    assert identity.user_for(None) == identity.user_for("anything") == "dana"
    assert Identity(local_user="erin").local_user == "erin"


def test_flowstate_tokens_names_the_file_a_server_reads(serve, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"{ALICE} alice\n")
    server = serve()  # the fixture clears FLOWSTATE_TOKENS; set it for the next server
    assert not server.service.identity.requires_tokens
    monkeypatch.setenv("FLOWSTATE_TOKENS", str(path))
    server = serve()
    with client(server) as http:
        assert http.post("sessions").status_code == 401
    with client(server, ALICE) as http:
        assert http.post("sessions").status_code == 201
    monkeypatch.setenv("FLOWSTATE_TOKENS", str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match=r"cannot read the tokens file .*missing\.txt"):
        serve()
