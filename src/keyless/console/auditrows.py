"""How the console shows audit events: one row's fields for people, and the filter form's
values (shared by the audit timeline, its live tail, and the token debugger)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import QueryParams

from keyless.text import printable

# The timeline's filters (query parameters of /audit and of GET /v1/audit/search).
FILTERS = ("identity", "namespace", "pod", "result", "dialect")
# Keys of an event's workload that the timeline shows in its own column, in this order.
WORKLOAD_KEYS = ("cluster", "namespace", "service_account", "pod")


def when(seconds: Any) -> str:
    try:
        return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def for_people(value: Any) -> Any:
    """``value`` (an admin API answer) with every string's control, format and bidi characters
    escaped (``keyless.text.printable``): a subject or pod name comes from a presented token,
    and must not reorder or hide what the page says. Jinja escapes HTML on top."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k): for_people(v) for k, v in value.items()}
    if isinstance(value, list):
        return [for_people(v) for v in value]
    return value


def row(event: dict[str, Any]) -> dict[str, Any]:
    """One event for the timeline: what it was, who (identity and workload), and the outcome."""
    event = for_people(event)
    workload = event.get("workload") or {}
    return {
        **event,
        "when": when(event.get("time")),
        "who": event.get("identity") or event.get("actor") or "",
        "namespace": workload.get("namespace", ""),
        "pod": workload.get("pod", ""),
        "subject": workload.get("sub", ""),
        "unverified": workload.get("verified") is False,
        "refused_exchange": str(event.get("action", "")).startswith("token.exchange.")
        and event.get("result") == "failure",
    }


def filters_of(query: QueryParams) -> dict[str, str]:
    """The filters the page was asked for (stripped; empty ones dropped)."""
    return {k: v.strip() for k in FILTERS if (v := query.get(k, "")).strip()}
