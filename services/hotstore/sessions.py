"""Per-``session_id`` state: the settings a client ``SET`` and the database it ``USE``d.

A ClickHouse server keeps both in the HTTP session; the one chDB connection has only one
set, so the service keeps each client's copy here and puts it on the connection before
each of that client's statements (see :mod:`.chdb_engine`).  Sessions expire after
``session_timeout`` seconds idle (ClickHouse's default is 60 s), as on a server.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

DEFAULT_SESSION_TIMEOUT_S = 60.0
MAX_SESSION_TIMEOUT_S = 3600.0


@dataclass
class SessionState:
    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    timeout_s: float = DEFAULT_SESSION_TIMEOUT_S
    last_used: float = field(default_factory=time.monotonic)


class SessionStore:
    """Thread-safe map of session id to :class:`SessionState`, with idle expiry."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionState] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str, timeout_s: float | None) -> SessionState:
        """The session's state, created if new or expired; touching it renews it."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            state = self._sessions.get(session_id)
            if state is None:
                state = SessionState()
                self._sessions[session_id] = state
            if timeout_s is not None:
                state.timeout_s = min(max(timeout_s, 0.0), MAX_SESSION_TIMEOUT_S)
            state.last_used = now
            return state

    def touch(self, state: SessionState) -> None:
        """Restart the idle clock at the end of a request (long requests must not expire it)."""
        state.last_used = time.monotonic()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expire(self, now: float) -> None:
        dead = [sid for sid, s in self._sessions.items() if now - s.last_used > s.timeout_s]
        for sid in dead:
            del self._sessions[sid]
