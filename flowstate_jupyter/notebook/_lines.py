"""Magic lines are data: options, flags, comments and JSON values read out of a raw line
(docs/decisions.md, 'Magic lines are data').

IPython's ``$name`` / ``{expr}`` expansion is off for every magic (``no_var_expand``), so
``%state set session.note "{1+1}"`` stores the text ``{1+1}`` and nothing in a line is ever
evaluated. Values are JSON (a bare word such as ``agent`` is taken as a string). A ``#`` outside
JSON strings and brackets, at the start of the line or after a space, starts a comment that is
ignored, so lines copied with their comments work. Options and flags count only outside JSON
values: ``{"message": "see --user bob"}`` stays intact.
"""

from __future__ import annotations

import re
from typing import Any

from IPython.core.error import UsageError

from ..base.jsonvalues import NOT_JSON_SYNTAX, load_json
from ..base.text import short
from ..errors import ValidationError

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-@:/ ]*")
_OPTION = re.compile(r"(?:^|\s)--(flow|session|user|project|limit|status)(?:=|\s+)(\S+)")
_FLAG = re.compile(r"(?:^|\s)--(side|table)(?=\s|$)")


def parse_value(text: str, where: str = "") -> Any:
    """JSON, or a bare word taken as a string; anything else is a UsageError.

    ``where`` (a path such as ``session.mode``) starts the message, so it names the field.
    JSON by the stored-value rules (:func:`~flowstate_jupyter.base.jsonvalues.load_json`): no
    NaN, no lone surrogates, no nesting too deep to handle.
    """
    text = text.strip()
    prefix = f"{where}: " if where else ""
    if not text:
        raise UsageError(f"{prefix}a value is needed (JSON, e.g. 3, \"text\", [1, 2], "
                         f"{{\"a\": 1}})")
    try:
        return load_json(text, where=where or "value")
    except ValidationError as exc:
        if exc.reason != NOT_JSON_SYNTAX:
            raise UsageError(one_line(exc)) from None
        if _BARE.fullmatch(text) and text not in ("true", "false", "null"):
            return text
        detail = str(exc).rpartition(" is not JSON ")[2]
        raise UsageError(f"{prefix}value {short(text, 60)} is not JSON {detail}; quote "
                         f"strings, e.g. '\"text\"'") from None


def one_line(exc: BaseException) -> str:
    """An error's message with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(str(exc).split())


def _scan(line: str) -> list[tuple[str, bool]]:
    """Each character of ``line`` with whether it stands outside JSON strings, brackets and
    braces (the character that opens a string or bracket is itself outside)."""
    marked, depth, in_string, escaped = [], 0, False, False
    for char in line:
        marked.append((char, depth == 0 and not in_string))
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
    return marked


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment``: a ``#`` outside JSON strings and brackets, at
    the start of the line or after whitespace (``"a # b"``, ``[1, "#"]`` and
    ``files[docs/#1]`` keep theirs)."""
    if "#" not in line:
        return line
    for i, (char, outside) in enumerate(_scan(line)):
        if char == "#" and outside and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def _take(pattern: re.Pattern[str], line: str) -> tuple[str, list[re.Match[str]]]:
    """The matches of ``pattern`` whose ``--`` stands outside JSON values, and the line
    without them."""
    outside = [flag for _, flag in _scan(line)]
    taken, kept, start = [], [], 0
    for match in pattern.finditer(line):
        if not outside[match.start(1) - 2]:  # the "--" sits inside a JSON value
            continue
        taken.append(match)
        kept.append(line[start:match.start()])
        start = match.end()
    return " ".join([*kept, line[start:]]), taken


def take_options(line: str) -> tuple[str, dict[str, str], bool]:
    """Pull ``--flow X``-style options and ``-t`` out of a raw line, keeping the rest raw.

    Only options outside JSON values count. A trailing ``# comment`` is dropped first.
    """
    rest, matches = _take(_OPTION, strip_comment(line))
    options = {match.group(1): match.group(2) for match in matches}
    tokens = rest.split(None, 1)
    traceback = False
    while tokens and tokens[0] in ("-t", "--traceback"):
        traceback = True
        rest = tokens[1] if len(tokens) > 1 else ""
        tokens = rest.split(None, 1)
    return rest.strip(), options, traceback


def take_flags(line: str) -> tuple[str, set[str]]:
    """Pull the ``--side`` / ``--table`` flags out of a line (outside JSON values)."""
    rest, matches = _take(_FLAG, line)
    return rest.strip(), {match.group(1) for match in matches}
