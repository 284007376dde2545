"""One lock per key, for single-flight work (one load per file, one fit per map), forgotten when its
last user is done, so the table holds only keys in use however many keys requests bring."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterator


class KeyedLocks:
    """``with locks.hold(key): ...`` runs one holder per key at a time; later callers wait."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, threading.Lock] = {}
        self._users: dict[Hashable, int] = {}  # holders and waiters per key
        self._guard = threading.Lock()

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)

    @contextlib.contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            self._users[key] = self._users.get(key, 0) + 1
            lock = self._locks.setdefault(key, threading.Lock())
        try:
            with lock:
                yield
        finally:
            with self._guard:
                self._users[key] -= 1
                if self._users[key] == 0:
                    del self._users[key], self._locks[key]
