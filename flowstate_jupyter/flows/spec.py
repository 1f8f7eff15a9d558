"""What the run machinery and sessions need of a flow, as a Protocol.

``runs.py`` and ``sessions.py`` sit below ``flow.py`` (which builds flows out of them), so they
name the flow they are given by this Protocol instead of importing the ``Flow`` class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from ..handles.resources import CollectionDefinition, ResourceDefinition
from ..stores.base import Store

if TYPE_CHECKING:
    from .blocks import Block


class FlowSpec(Protocol):
    """The parts of :class:`~flowstate_jupyter.Flow` that runs and sessions use."""

    kind: str
    path: str

    def state_model(self, scope: str) -> type[BaseModel] | None: ...

    def resources(self, scope: str) -> dict[str, ResourceDefinition | CollectionDefinition]: ...

    def client_data_functions(self, scope: str) -> dict[str, Callable]: ...

    def root_sequencer_model(self, block: Block) -> tuple[type[BaseModel] | None, bool]: ...

    # The options of Flow.run, spelled out (a ``**options`` here would oblige a flow to take any
    # keyword). They return a RunResult, which lives in runs.py, above this module.
    def run(self, action: str, input: Any = None, *, user: str | None = None,
            session: str | None = None, project: str = ..., store: Store | None = None,
            on_event: Callable[[dict], None] | None = None) -> Any: ...

    async def arun(self, action: str, input: Any = None, *, user: str | None = None,
                   session: str | None = None, project: str = ..., store: Store | None = None,
                   on_event: Callable[[dict], None] | None = None) -> Any: ...

    def run_block(self, block: Block, input: Any = None, *, user: str | None = None,
                  session: str | None = None, project: str = ..., store: Store | None = None,
                  on_event: Callable[[dict], None] | None = None) -> Any: ...
