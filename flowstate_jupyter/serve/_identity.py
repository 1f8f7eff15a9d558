"""Who is calling: bearer tokens mapped to user ids, or one local user on loopback.

Tokens come from a file, given as ``tokens=`` (a path, or a ``{token: user}`` mapping) or by
``flowstate serve --tokens FILE``, else from the file named by ``FLOWSTATE_TOKENS``. The file is
either a JSON object ``{"<token>": "<user id>", ...}`` or text with one ``TOKEN USER`` pair a line
(blank lines and lines starting with ``#`` are skipped). Without tokens the server serves one
local user (``FLOWSTATE_USER``, else the OS user), and binds to loopback only.

Tokens are kept as SHA-256 digests: a lookup compares digests, so how long a comparison takes
says nothing about how much of a guessed token was right.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Union

from ..base.env import current_user
from ..base.ids import check_id
from ..errors import InvalidIdError

__all__ = ["TOKENS_ENV", "Identity", "load_tokens"]

#: Names a tokens file when ``tokens`` is not given.
TOKENS_ENV = "FLOWSTATE_TOKENS"
#: Shorter tokens are refused: a server on a network must not be open to guessing.
MIN_TOKEN_CHARS = 16

TokenSource = Union[Mapping[str, str], str, "os.PathLike[str]"]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _checked(pairs: list[tuple[str, str, str]]) -> dict[str, str]:
    """``{token: user}`` from ``(token, user, where)`` triples, each checked."""
    out: dict[str, str] = {}
    for token, user, where in pairs:
        if not isinstance(token, str) or not isinstance(user, str):
            raise ValueError(f"{where}: tokens and user ids are strings")
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise ValueError(f"{where}: a token is at least {MIN_TOKEN_CHARS} characters without "
                             f"spaces (make one with: python -c 'import secrets; "
                             f"print(secrets.token_urlsafe(32))')")
        try:
            check_id(user, "user id")
        except InvalidIdError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if token in out:
            raise ValueError(f"{where}: this token is given twice; each token names one user")
        out[token] = user
    if not out:
        raise ValueError("the tokens list is empty: give at least one TOKEN USER pair, or no "
                         "tokens to serve one local user on loopback")
    return out


def load_tokens(source: TokenSource) -> dict[str, str]:
    """``{token: user id}`` from a mapping or a tokens file (see the module docstring).

    Raises ``ValueError`` naming the file (and line) for a file it cannot read or use.
    """
    if isinstance(source, Mapping):
        return _checked([(t, u, f"token for user {u!r}") for t, u in source.items()])
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read the tokens file {path}: {reason}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON object ({exc.msg} at line {exc.lineno}); "
                             f"write {{\"<token>\": \"<user id>\", ...}}") from None
        return _checked([(t, u, f"{path}: the entry for user {u!r}")
                         for t, u in data.items()])
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path} line {number}: expected 'TOKEN USER' (two words), found "
                             f"{len(parts)}")
        pairs.append((parts[0], parts[1], f"{path} line {number}"))
    return _checked(pairs)


class Identity:
    """Maps a request's bearer token to a user id, or serves one local user without tokens."""

    def __init__(self, tokens: TokenSource | None = None, *,
                 local_user: str | None = None) -> None:
        if tokens is None and os.environ.get(TOKENS_ENV):
            tokens = os.environ[TOKENS_ENV]
        mapping = None if tokens is None else load_tokens(tokens)
        self._users = None if mapping is None else {_digest(t): u for t, u in mapping.items()}
        #: The one user served without tokens (``None`` when tokens are required).
        self.local_user = None if mapping is not None else \
            check_id(local_user, "user id") if local_user is not None else current_user()

    @property
    def requires_tokens(self) -> bool:
        return self._users is not None

    @property
    def user_count(self) -> int:
        return len(set(self._users.values())) if self._users is not None else 1

    def user_for(self, token: str | None) -> str | None:
        """The user a token names (the local user when no tokens are used); ``None``: unknown."""
        if self._users is None:
            return self.local_user
        if not token:
            return None
        return self._users.get(_digest(token))
