"""The store used when none is given: ``open_store()``, opened once per process.

Runs, sessions and the Windmill layer all ask :func:`default_store`, so a process that never
names a store still uses one store object for its default store.
"""

from __future__ import annotations

import os
import threading

from ..base.env import store_url
from . import open_store, sqlite_path
from .base import Store

_STORES: dict[str, Store] = {}
_LOCK = threading.Lock()


def default_store() -> Store:
    """``open_store()`` for the current ``FLOWSTATE_STORE`` (else ``.flowstate/flowstate.db``
    under the current folder), opened once per process and reopened if it was closed.

    A relative SQLite path means "under the current folder", so the key is the resolved file:
    changing folder or ``FLOWSTATE_STORE`` gives another store. The process id in the key keeps
    a forked child from sharing its parent's connection.
    """
    url = store_url()
    key = f"{os.getpid()}:{sqlite_path(url) if url.startswith('sqlite://') else url}"
    with _LOCK:
        store = _STORES.get(key)
        if store is None or getattr(store, "_closed", False):
            store = _STORES[key] = open_store(url)
        return store
