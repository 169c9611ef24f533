"""Structured JSON logs on stderr, each line carrying the request id when there is one.

Log calls pass identifiers only (tenant, kid, route, status); no token, assertion or secret
value is ever handed to a logger.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
import time
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second, not per line
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


BATCHED = "keyless.access"  # one line per request: batched; every other logger's at once


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The access log's lines written in batches (a line per request made a write per
    request), at most ``interval`` seconds late (a daemon thread flushes; so does
    ``logging.shutdown`` at exit); every other line at once, after what is waiting, so the
    order holds. A SIGKILL can lose that much of the access log; the audit log, not this, is
    the durable record of every access."""

    def __init__(self, stream: Any, *, interval: float = 0.25, limit: int = 64 * 1024) -> None:
        super().__init__(stream)
        self.interval = interval
        self.limit = limit
        self._pending: list[str] = []
        self._size = 0
        self._wake = threading.Event()
        threading.Thread(target=self._flusher, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if record.name != BATCHED or record.levelno >= logging.WARNING or self._size >= self.limit:
            self._write()
        elif len(self._pending) == 1:
            self._wake.set()  # the first line waiting: the flusher counts from now

    def _write(self) -> None:
        """Write what is waiting (the caller holds the handler's lock)."""
        if not self._pending:
            return
        text, self._pending, self._size = "".join(self._pending), [], 0
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            self._write()
            super().flush()

    def _flusher(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)
            self._wake.clear()
            self.flush()


def configure(level: str) -> None:
    # The JSON lines carry none of the caller's file, line, thread or process: skip finding
    # them for every record (the stack walk alone cost more than the formatting).
    logging._srcfile = None  # logging's documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in (
        "uvicorn",
        "uvicorn.error",
        "uvicorn.access",
        "alembic",
        "httpx",
        "sqlalchemy",
        "aiosqlite",
        "psycopg",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
