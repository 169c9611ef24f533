"""The health page's timeline layout and its times for people, on their own."""

from __future__ import annotations

import pytest

from keyless.console.timeline import LABEL, WIDTH, Row, Segment, at, layout, relative, span

DAY = 86400.0
T0 = 1_796_670_000.0  # 2026-12-07 19:00 UTC


def test_at_and_relative() -> None:
    assert at(T0) == "2026-12-07 19:00 UTC"
    assert at(None) == "—"
    assert relative(T0 + 3 * DAY, T0) == "in 3 d"
    assert relative(T0 - 300, T0) == "5 min ago"
    assert relative(None, T0) == ""


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (59, "59 s"), (60, "1 min"), (7200, "2 h"), (-DAY, "1 d")]
)
def test_span(seconds: float, text: str) -> None:
    assert span(seconds) == text


def test_layout_places_rows_and_marks_on_one_axis() -> None:
    rows = [
        Row("current", "current", [Segment("signing", T0, T0 + 30 * DAY)]),
        Row(
            "next",
            "next",
            [
                Segment("published", T0, T0 + 30 * DAY),
                Segment("signing", T0 + 30 * DAY, T0 + 60 * DAY),
            ],
        ),
    ]
    placed = layout(rows, [("now", T0 + DAY, "now"), ("rotation", T0 + 30 * DAY, "next rotation")])
    current, nxt = placed.rows
    assert current.y < nxt.y and placed.height > nxt.y
    assert current.segments[0].x == LABEL  # the earliest time sits at the axis' start
    assert nxt.segments[1].x + nxt.segments[1].width == pytest.approx(WIDTH - 10, abs=0.2)
    rotation = dict((cls, x) for cls, x, _ in placed.marks)["rotation"]
    assert rotation == pytest.approx(nxt.segments[1].x, abs=0.1)  # next signs at the rotation
    assert rotation == pytest.approx((LABEL + WIDTH - 10) / 2, abs=0.2)
    assert placed.ticks[0][1] == "2026-12-07"


def test_a_tiny_segment_stays_visible() -> None:
    rows = [
        Row("a", "retired", [Segment("verifying", T0, T0 + 1)]),
        Row("b", "current", [Segment("signing", T0, T0 + 60 * DAY)]),
    ]
    assert layout(rows, []).rows[0].segments[0].width >= 2


def test_empty_layout() -> None:
    assert layout([], []).rows == []
