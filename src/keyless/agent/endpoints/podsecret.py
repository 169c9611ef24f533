"""The per-pod secret the Azure and AWS endpoints demand of their callers: random, made when the
agent starts, handed to the application only through the environment file and the AWS token
file (both mode 0640 in the shared volume), never logged (``repr`` hides it).

Only processes that can read those files can ask for the pod's tokens; a process that can
merely reach the loopback port (another container of the pod, a server-side request forgery
through the application) cannot.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from keyless.agent.files import write_atomic

FILE_MODE = 0o640  # the agent's user, and the pod's fsGroup (a shared emptyDir)


class PodSecret:
    __slots__ = ("_value",)

    def __init__(self, value: str | None = None) -> None:
        self._value = value or secrets.token_urlsafe(32)

    def __repr__(self) -> str:
        return "PodSecret(***)"

    @property
    def value(self) -> str:
        return self._value

    def check(self, presented: str | None) -> int | None:
        """None when ``presented`` is the secret; else the HTTP status to refuse with: 401
        when it is missing, 403 when it is wrong."""
        if not presented:
            return 401
        if hmac.compare_digest(presented.strip().encode(), self._value.encode()):
            return None
        return 403


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``agent/files.py``), mode 0640: a reader sees the
    old file or the new one, never a part."""
    write_atomic(path, text.encode(), FILE_MODE)
