"""Every public exception of flowstate-jupyter, re-exported at the top level.

Messages say what was wrong, where, and what to do. All derive from ``FlowStateError`` so
``except fs.FlowStateError`` catches anything this library raises on purpose; the second base
class lets ordinary ``except ValueError`` / ``KeyError`` / ``PermissionError`` code work too::

    FlowStateError
    ├── ValidationError (ValueError)          a write or input refused; nothing stored
    ├── SchemaError (TypeError)               a schema that cannot be used
    ├── ConcurrentModificationError           a write lost every compare-and-swap retry
    │   └── VersionConflictError              one stale write, stating an old version
    ├── StateSchemaConflictError (TypeError)  two blocks declare a field incompatibly
    ├── ResourceConflictError (TypeError)     two resource definitions under one name
    ├── ReadOnlyResourceError (PermissionError)
    ├── ResourceDeletedError                  written after another writer deleted it
    ├── ResourceAlreadyExistsError            a create lost, or the key is taken
    ├── ResourceNotFoundError (KeyError)
    ├── InvalidIdError (ValueError)           an id, name, key or path breaking the rules
    ├── UnknownActionError (KeyError)
    ├── LoopLimitError (RuntimeError)         do_while / do_until did not stop
    ├── AccessDeniedError (PermissionError)   another user's session or u/<user>/ path
    ├── RunStateError                         resume of a run that is not suspended, ...
    ├── RunConflictError                      another run of the action is in flight
    ├── NotInFlowRunError (RuntimeError)      flow user state used outside a run
    ├── HistoryNotKeptError (LookupError)     a version a fork or replay needs was pruned
    └── StoreError                            unreachable, locked, corrupt, unknown outcome

    FlowStateWarning (UserWarning)            something read leniently
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


class RunStateError(FlowStateError):
    """A run cannot do what was asked in its present state (for example resuming a run that is
    not suspended, a second resume, or an expired suspension)."""


class RunConflictError(FlowStateError):
    """Another run of the same action is in flight on the session (``concurrency="reject"``,
    or a ``"queue"`` wait that timed out); the message names that run, ``request_id`` holds it."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class NotInFlowRunError(FlowStateError, RuntimeError):
    """Flow user state was used outside a flow run, where there is none."""


class HistoryNotKeptError(FlowStateError, LookupError):
    """A version that is needed (to fork a session as of a past version, or to replay a run
    from the state it started in) is no longer in the bounded history; the message names the
    record and what to do instead."""


class StoreError(FlowStateError):
    """The store is unreachable, locked past its timeout, corrupt, or not a flowstate store; or
    a commit's outcome could not be known (the connection was lost during ``COMMIT``)."""


class FlowStateWarning(UserWarning):
    """Something was read leniently (for example stored data that no longer fits its schema)."""


__all__ = [
    "AccessDeniedError", "ConcurrentModificationError", "FlowStateError", "FlowStateWarning",
    "HistoryNotKeptError", "InvalidIdError", "LoopLimitError", "NotInFlowRunError",
    "ReadOnlyResourceError", "ResourceAlreadyExistsError", "ResourceConflictError",
    "ResourceDeletedError", "ResourceNotFoundError", "RunConflictError", "RunStateError",
    "SchemaError", "StateSchemaConflictError", "StoreError", "UnknownActionError",
    "ValidationError", "VersionConflictError",
]
