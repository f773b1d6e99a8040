"""open_store: a store URL (or a store) to a RunStore.

::

    "memory://"                   MemoryStore (one process)
    "sqlite:///relative/path.db"  SQLiteStore, path relative to the working directory
    "sqlite:////abs/path.db"      SQLiteStore, absolute path (four slashes)
    a RunStore                    returned unchanged; its own settings apply

The SQLAlchemy spelling of SQLite URLs, so a URL users already have works as is.
"""

from __future__ import annotations

from typing import Any, Union

from ..errors import InvalidValue
from .base import RunStore
from .errors import InvalidStoreURL
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["open_store"]

# Schemes users will try, with what to say until their store exists.
_LATER = {
    "postgresql": "PostgreSQL", "postgres": "PostgreSQL",
    "redis": "Redis", "rediss": "Redis",
}


def open_store(store: Union[str, RunStore], **options: Any) -> RunStore:
    """The run store named by ``store``.

    Args:
        store: a URL (see the module docstring) or a RunStore instance.
        **options: keyword arguments for the store's constructor (``namespace``,
            ``clock``, ``early_tolerance_secs``, ``retention_secs``, and for SQLite
            ``timeout_secs`` and ``synchronous``); not accepted with an instance.

    Raises:
        InvalidStoreURL: an unknown scheme or a malformed URL.
        StoreError: the SQLite file cannot be used (see :class:`SQLiteStore`).
        InvalidValue: ``store`` is neither a string nor a RunStore, or a bad option.
    """
    if isinstance(store, RunStore):
        if options:
            raise InvalidValue(f"open_store({store!r}, {', '.join(sorted(options))}=...): "
                               "options apply to URLs only; configure the store itself")
        return store
    if not isinstance(store, str):
        raise InvalidValue(f"store={store!r}: expected a store URL such as 'memory://' or "
                           "'sqlite:///scheduler.db', or a RunStore")
    scheme, sep, rest = store.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise InvalidStoreURL(f"store URL {store!r}: expected scheme://..., e.g. "
                              "'memory://' or 'sqlite:///scheduler.db'")
    if scheme == "memory":
        if rest:
            raise InvalidStoreURL(f"store URL {store!r}: 'memory://' takes nothing after it")
        return MemoryStore(**options)
    if scheme == "sqlite":
        # sqlite:///x.db -> "/x.db" after the netloc (empty) -> relative "x.db";
        # sqlite:////abs/x.db -> "//abs/x.db" -> absolute "/abs/x.db".
        if not rest.startswith("/"):
            raise InvalidStoreURL(f"store URL {store!r}: expected 'sqlite:///relative.db' or "
                                  "'sqlite:////absolute/path.db' (no host)")
        path = rest[1:]
        if "?" in path or "#" in path:
            raise InvalidStoreURL(f"store URL {store!r}: query strings are not supported; "
                                  "pass options to open_store() instead")
        if not path or path == ":memory:":
            raise InvalidStoreURL(f"store URL {store!r}: expected a file path "
                                  "(use 'memory://' for a store in memory)")
        return SQLiteStore(path, **options)
    if scheme.split("+")[0] in _LATER:
        name = _LATER[scheme.split("+")[0]]
        raise InvalidStoreURL(
            f"store URL {store!r}: the {name} store is not available yet; it is planned "
            f"with an optional extra (pip install 'memory_scheduler[{name.lower()}]'). "
            "Use 'sqlite:///path.db' for several processes on one host")
    raise InvalidStoreURL(f"store URL {store!r}: unknown scheme {scheme!r}; expected "
                          "'memory://' or 'sqlite:///path.db'")
