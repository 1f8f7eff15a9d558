"""Every public exception of flowstate-jupyter (DESIGN §12).

Messages say what was wrong, where, and what to do. All derive from ``FlowStateError`` so
``except fs.FlowStateError`` catches anything this library raises on purpose.
"""

from __future__ import annotations

from typing import Any


class FlowStateError(Exception):
    """Base class of every error flowstate-jupyter raises on purpose."""


class ValidationError(FlowStateError, ValueError):
    """A write or an input was refused before anything was stored.

    ``where`` names the scope or resource, ``path`` the field path (a tuple), ``reason`` why.
    """

    def __init__(self, message: str, *, where: str | None = None,
                 path: tuple[Any, ...] = (), reason: str | None = None) -> None:
        super().__init__(message)
        self.where = where
        self.path = tuple(path)
        self.reason = reason or message


class SchemaError(FlowStateError, TypeError):
    """A state or resource schema cannot be used (for example a field without a default)."""


class ConcurrentModificationError(FlowStateError):
    """A write kept losing compare-and-swap races and gave up after ``attempts`` tries."""

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class VersionConflictError(ConcurrentModificationError):
    """A store write stated a version that is no longer current (one compare-and-swap lost).

    ``current`` is the record's version now (``None`` when there is no record at all) and
    ``deleted`` says whether the record is a tombstone. Scope and resource handles catch this
    and retry; you meet it only when you call a store directly.
    """

    def __init__(self, message: str, *, current: int | None, deleted: bool = False) -> None:
        super().__init__(message, attempts=1)
        self.current = current
        self.deleted = deleted


class StateSchemaConflictError(FlowStateError, TypeError):
    """Two blocks (or a block and its flow) declare one state field incompatibly."""


class ResourceConflictError(FlowStateError, TypeError):
    """Two different resource definitions share one name in one scope."""


class ReadOnlyResourceError(FlowStateError, PermissionError):
    """A write to a resource defined with ``writable=False``."""


class ResourceDeletedError(FlowStateError):
    """A write to a resource that another writer deleted since it was read."""


class ResourceAlreadyExistsError(FlowStateError):
    """A create lost to another writer, or the key is already taken."""


class ResourceNotFoundError(FlowStateError, KeyError):
    """A resource, collection key or record that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidIdError(FlowStateError, ValueError):
    """A scope id, resource name or key that breaks the naming rules."""


class UnknownActionError(FlowStateError, KeyError):
    """A flow was asked to run an action it does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LoopLimitError(FlowStateError, RuntimeError):
    """A ``do_while`` / ``do_until`` loop did not stop within its iteration limit."""


class AccessDeniedError(FlowStateError, PermissionError):
    """The current user may not write this path (Windmill ``u/<user>/...`` rules)."""


class StoreError(FlowStateError):
    """The store is unreachable, locked past its timeout, corrupt, or not a flowstate store."""


__all__ = [
    "FlowStateError", "ValidationError", "SchemaError", "ConcurrentModificationError",
    "VersionConflictError", "StateSchemaConflictError", "ResourceConflictError",
    "ReadOnlyResourceError", "ResourceDeletedError", "ResourceAlreadyExistsError",
    "ResourceNotFoundError", "InvalidIdError", "UnknownActionError", "LoopLimitError",
    "AccessDeniedError",
    "StoreError",
]


class FlowStateWarning(UserWarning):
    """Something was read leniently (for example stored data that no longer fits its schema)."""


__all__.append("FlowStateWarning")
