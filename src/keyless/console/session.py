"""Who may use the console: whoever opened the one-time login link printed to the terminal.

The link's token is good once; it buys a session cookie (HttpOnly, SameSite=Strict, Path=/)
that lives as long as the console process. Every form carries the session's CSRF token, and a
cross-origin POST is refused outright. Randomness is injected for tests.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "keyless_console"


@dataclass
class Gate:
    token_urlsafe: Callable[[int], str] = secrets.token_urlsafe
    login_token: str = ""
    _used: bool = False
    _sessions: dict[str, str] = field(default_factory=dict)  # session id -> CSRF token

    def __post_init__(self) -> None:
        if not self.login_token:
            self.login_token = self.token_urlsafe(32)

    def login(self, token: str) -> str | None:
        """A new session id for the first use of the link's token; None afterwards."""
        if self._used or not hmac.compare_digest(token.encode(), self.login_token.encode()):
            return None
        self._used = True
        session = self.token_urlsafe(32)
        self._sessions[session] = self.token_urlsafe(32)
        return session

    def csrf(self, session: str | None) -> str | None:
        """The session's CSRF token, or None for no/unknown session."""
        if not session:
            return None
        for known, csrf in self._sessions.items():
            if hmac.compare_digest(known.encode(), session.encode()):
                return csrf
        return None

    def check_csrf(self, session: str | None, sent: str | None) -> bool:
        expected = self.csrf(session)
        if not expected or not sent:
            return False
        return hmac.compare_digest(expected.encode(), sent.encode())
