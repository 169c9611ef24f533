"""Times for people, and rotation timelines laid out for a server-rendered SVG.

A timeline is rows (one key or CA generation each) of segments (``kind``: what the key does
in that span: ``waiting`` to sign, ``signing``, ``verifying`` after retirement) placed on one
time axis, with marks (now, the next rotation). Only layout lives here; the template draws it
and a table next to it says the same in words.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH = 900  # the SVG's user units
LABEL = 230  # left column for row labels
ROW = 30
TOP = 34  # room for the axis labels and marks' captions
TICKS = 5


def at(ts: float | None) -> str:
    """``2026-12-07 19:14 UTC``, or an em dash for no time."""
    if ts is None:
        return "—"
    when = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def span(seconds: float) -> str:
    """A duration rounded to its largest unit: ``42 s``, ``5 min``, ``3 h``, ``12 d``."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def relative(ts: float | None, now: float) -> str:
    """``in 3 d`` or ``5 min ago``."""
    if ts is None:
        return ""
    return f"in {span(ts - now)}" if ts > now else f"{span(now - ts)} ago"


@dataclass(frozen=True, slots=True)
class Segment:
    kind: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    state: str
    segments: Sequence[Segment]


@dataclass(slots=True)
class Placed:
    kind: str
    x: float
    width: float
    title: str


@dataclass(slots=True)
class PlacedRow:
    label: str
    state: str
    y: float
    segments: list[Placed] = field(default_factory=list)


@dataclass(slots=True)
class Layout:
    width: int
    height: int
    left: int
    rows: list[PlacedRow]
    marks: list[tuple[str, float, str]]  # (css class, x, caption)
    ticks: list[tuple[float, str]]


def layout(rows: Sequence[Row], marks: Sequence[tuple[str, float, str]]) -> Layout:
    """Rows and marks (css class, time, caption) placed on an axis spanning all of them."""
    times = [t for r in rows for s in r.segments for t in (s.start, s.end)]
    times += [t for _, t, _ in marks]
    low, high = (min(times), max(times)) if times else (0.0, 1.0)
    if high - low < 60:
        high = low + 60
    scale = (WIDTH - LABEL - 10) / (high - low)

    def x(t: float) -> float:
        return round(LABEL + (t - low) * scale, 1)

    placed = []
    for index, row in enumerate(rows):
        out = PlacedRow(row.label, row.state, TOP + index * ROW)
        for s in row.segments:
            start, end = x(s.start), x(s.end)
            title = f"{s.kind}: {at(s.start)} to {at(s.end)}"
            out.segments.append(Placed(s.kind, start, max(end - start, 2.0), title))
        placed.append(out)
    step = (high - low) / (TICKS - 1)
    ticks = [(x(low + i * step), at(low + i * step)[:10]) for i in range(TICKS)]
    return Layout(
        width=WIDTH,
        height=TOP + max(len(rows), 1) * ROW + 8,
        left=LABEL,
        rows=placed,
        marks=[(cls, x(t), caption) for cls, t, caption in marks],
        ticks=ticks,
    )
