"""``keyless.logs``: JSON lines, and the access log written in batches without losing order."""

from __future__ import annotations

import io
import json
import logging
import threading

from keyless.logs import BATCHED, BatchingHandler, JsonFormatter


class Stream(io.StringIO):
    """A stream that says when something was written (the flusher thread's work)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Event()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        self.written.set()
        return super().write(text)


def _record(name: str, level: int, msg: str, created: float | None = None) -> logging.LogRecord:
    record = logging.LogRecord(name, level, "", 0, msg, (), None)
    record.route = "/healthz"  # an ``extra`` field, as the access log passes them
    if created is not None:
        record.created, record.msecs = created, (created % 1) * 1000
    return record


def _lines(stream: Stream) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_access_lines_wait_and_others_go_at_once_in_order() -> None:
    stream = Stream()
    handler = BatchingHandler(stream, interval=3600)  # the flusher stays out of this test
    handler.setFormatter(JsonFormatter())
    for i in range(3):
        handler.handle(_record(BATCHED, logging.INFO, f"request {i}"))
    assert stream.getvalue() == ""  # batched: no write per request
    handler.handle(_record("keyless.server", logging.INFO, "other"))
    assert [line["msg"] for line in _lines(stream)] == [
        "request 0",
        "request 1",
        "request 2",
        "other",
    ]
    assert stream.writes == 1  # the batch and the line after it in one write
    assert _lines(stream)[0]["route"] == "/healthz"
    handler.handle(_record(BATCHED, logging.INFO, "request 3"))
    handler.handle(_record(BATCHED, logging.WARNING, "slow"))  # a warning is never held
    assert [line["msg"] for line in _lines(stream)][-2:] == ["request 3", "slow"]
    handler.handle(_record(BATCHED, logging.INFO, "last"))
    handler.flush()  # what logging.shutdown does at exit
    assert _lines(stream)[-1]["msg"] == "last"


def test_the_flusher_writes_a_lone_access_line_soon() -> None:
    stream = Stream()
    handler = BatchingHandler(stream, interval=0.01)
    handler.setFormatter(JsonFormatter())
    handler.handle(_record(BATCHED, logging.INFO, "lonely"))
    assert stream.written.wait(10), "the access line was never written"
    assert [line["msg"] for line in _lines(stream)] == ["lonely"]


def test_a_full_batch_is_written_without_waiting() -> None:
    stream = Stream()
    handler = BatchingHandler(stream, interval=3600, limit=1)  # every line fills the batch
    handler.setFormatter(JsonFormatter())
    for i in range(3):
        handler.handle(_record(BATCHED, logging.INFO, f"request {i}"))
    assert len(_lines(stream)) == 3 and stream.writes == 3


def test_time_stamps_across_a_second_boundary() -> None:
    formatter = JsonFormatter()
    times = [1796634059.75, 1796634059.875, 1796634060.125, 1796634059.5]  # exact in binary
    stamps = [
        json.loads(formatter.format(_record("k", logging.INFO, "m", t)))["time"] for t in times
    ]
    assert stamps == [
        "2026-12-07T09:00:59.750Z",
        "2026-12-07T09:00:59.875Z",
        "2026-12-07T09:01:00.125Z",
        "2026-12-07T09:00:59.500Z",
    ]
