"""The package's face: one sorted ``__all__`` that is exactly the public names, and a version."""

from __future__ import annotations

import types
from importlib.metadata import version

import flowstate_jupyter as fs
from flowstate_jupyter import errors

#: IPython finds these by name; they are not part of the Python API.
IPYTHON_HOOKS = {"load_ipython_extension", "unload_ipython_extension"}


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's order for ``__all__`` (RUF022): CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_has_no_duplicates() -> None:
    assert fs.__all__ == sorted(set(fs.__all__), key=_isort_key)


def test_all_lists_exactly_the_public_names_that_are_not_submodules() -> None:
    public = {name for name, value in vars(fs).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public - IPYTHON_HOOKS == set(fs.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in fs.__all__ if not hasattr(fs, name)]
    assert not missing


def test_every_public_error_is_exported_at_the_top() -> None:
    assert set(errors.__all__) <= set(fs.__all__)
    assert errors.__all__ == sorted(errors.__all__, key=_isort_key)
    for name in errors.__all__:
        assert getattr(fs, name) is getattr(errors, name)
        if name != "FlowStateWarning":
            assert issubclass(getattr(fs, name), fs.FlowStateError)


def test_the_error_tree_in_the_docstring_names_every_error() -> None:
    doc = errors.__doc__ or ""
    assert all(name in doc for name in errors.__all__)


def test_the_version_comes_from_the_package_metadata() -> None:
    assert fs.__version__ == version("flowstate-jupyter")
