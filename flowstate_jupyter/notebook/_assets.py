"""The live views' front-end code: ES modules and CSS in ``static/``, shipped as package data.

There is no build step. A view's module imports its helpers by relative path, one import
statement per line (``import { Tree } from "./jsontree.js";``), as any ES module would.
anywidget loads a view's source from a ``blob:`` URL, where a relative path has nothing to
resolve against, so ``esm`` replaces each relative import with a ``data:`` URL holding that
module (resolved the same way, recursively). The browser then loads them as ordinary modules;
one that several views import is evaluated once per page, since its URL is the same.

``css`` is the style sheet every view loads: the theme of ``model/html.py`` (the same one the
snapshots carry), the tree's ``jsontree.css`` and the views' ``views.css``.
"""

from __future__ import annotations

import base64
import functools
import re
from importlib.resources import files

from ..model.html import THEME_CSS

# A one-line import statement of a sibling module (comments and strings elsewhere do not count).
_RELATIVE_IMPORT = re.compile(
    r"""^(\s*import\s[^;\n]*?\bfrom\s*|\s*import\s*)(["'])\./([A-Za-z0-9_\-]+\.js)\2""",
    re.MULTILINE)


@functools.cache
def source(name: str) -> str:
    """The text of ``static/<name>``."""
    return files(__package__).joinpath("static").joinpath(name).read_text(encoding="utf-8")


@functools.cache
def esm(name: str) -> str:
    """The module ``static/<name>`` with its relative imports made ``data:`` URLs."""
    def inline(match: re.Match[str]) -> str:
        inner = esm(match.group(3)).encode("utf-8")
        url = "data:text/javascript;base64," + base64.b64encode(inner).decode("ascii")
        return f'{match.group(1)}"{url}"'
    return _RELATIVE_IMPORT.sub(inline, source(name))


@functools.cache
def css() -> str:
    """The style sheet of every live view."""
    return "\n".join([THEME_CSS, source("jsontree.css"), source("views.css")])
