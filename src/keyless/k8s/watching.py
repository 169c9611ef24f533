"""The in-cluster loops' common parts (k8s/controller.py's custom resources, k8s/restarts.py's
workloads): :func:`follow` lists, then watches from that list's resourceVersion, and wakes a
loop when objects change; :func:`rounds` runs the loop's rounds, when woken, when keyless's own
state moved, when a round asked for it, and periodically, while this replica leads.

The watch only wakes a loop; the loop lists again to act, so a lost event costs a delay, never
a wrong action. On a watch's end, an error or 410 Gone the objects are listed again (with a
growing pause after errors), and the loop is woken if the list differs from what the watch
had seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from keyless.core.errors import KeylessError

log = logging.getLogger("keyless.k8s")
WATCH_SECONDS = 300
MAX_BACKOFF = 30.0
DEBOUNCE = 0.2
RESYNC = 60.0
POLL = 2.0  # how often keyless's own revisions are compared (as the server follows them)

Obj = dict[str, Any]
Lister = Callable[[], Awaitable[tuple[list[Obj], str]]]


def why(exc: Exception) -> str:
    """An error in one line, for the log: an API answer by its status, not its whole body."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"the Kubernetes API answered {status} {getattr(exc, 'reason', '')}".strip()
    if isinstance(exc, KeylessError):
        return exc.message
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def uid_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid", ""))


def rv_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


async def follow(
    list_items: Lister,
    watched: Callable[..., Any],
    args: tuple[Any, ...],
    wake: asyncio.Event,
    stop: asyncio.Event,
    what: str,
    *,
    relevant: Callable[[Obj], bool] | None = None,
) -> None:
    """Until ``stop``: set ``wake`` whenever an object ``list_items`` lists changes.
    ``watched(*args, watch=True, ...)`` is the same list as a watch (``kubernetes_asyncio``'s
    list method). With ``relevant``, only changes to objects it accepts (or accepted before)
    wake the loop: a status update of some unrelated Deployment is not a reason to act."""
    from kubernetes_asyncio import watch

    def counts(obj: Obj) -> bool:
        return relevant is None or relevant(obj)

    backoff = 1.0
    seen: dict[str, str] | None = None  # uid -> resourceVersion, of the relevant objects
    while not stop.is_set():
        try:
            items, rv = await list_items()
            listed = {uid_of(o): rv_of(o) for o in items if counts(o)}
            if listed != seen:
                wake.set()
            seen = listed
            backoff = 1.0
            async with watch.Watch() as events:
                stream = events.stream(
                    watched,
                    *args,
                    resource_version=rv,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                )
                async for event in stream:
                    kind_of = event["type"]
                    if kind_of == "ERROR":
                        break  # 410 Gone (or another error): list again
                    if kind_of == "BOOKMARK":
                        continue
                    obj = event.get("raw_object") or {}
                    uid = uid_of(obj)
                    if not counts(obj) and uid not in seen:
                        continue
                    if kind_of == "DELETED" or not counts(obj):
                        seen.pop(uid, None)
                    else:
                        seen[uid] = rv_of(obj)
                    wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("watch failed", extra={"kind": what, "error": why(exc)})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)


async def rounds(
    act: Callable[[], Awaitable[float | None]],
    wake: asyncio.Event,
    leading: Callable[[], bool],
    stop: asyncio.Event,
    state: Callable[[], Awaitable[object]],
    what: str,
    *,
    now: Callable[[], float] = time.time,
    on_round: Callable[[str], None] | None = None,
    debounce: float = DEBOUNCE,
    resync: float = RESYNC,
    poll: float = POLL,
) -> None:
    """Until ``stop``, while ``leading()``: a round (``act``) on every wake (debounced, so a
    burst of events is one round), every ``resync`` seconds, when keyless's own ``state``
    moved (looked at every ``poll`` seconds), and once ``now()`` reaches the time the last
    round answered (None: no such time). Leadership, once taken, must set ``wake``. A failed
    round is one warning line, retried after a pause that grows to MAX_BACKOFF."""
    backoff = 1.0
    mark = await state()
    last = time.monotonic()
    due: float | None = None
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=poll)
        if stop.is_set():
            return
        if not leading():
            wake.clear()
            continue
        quiet = (
            not wake.is_set() and time.monotonic() - last < resync and (due is None or now() < due)
        )
        if quiet and (await state()) == mark:
            continue
        await asyncio.sleep(debounce)
        wake.clear()
        last = time.monotonic()
        if not leading():
            continue
        try:
            # The mark is taken before the round reads keyless's state: a change made while
            # the round runs wakes the next round.
            mark = await state()
            due = await act()
            backoff = 1.0
            if on_round:
                on_round("success")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(f"{what} round failed", extra={"error": why(exc)})
            if on_round:
                on_round("error")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)
            wake.set()
