"""The console's pages: each module has ``routes``; PAGES lists them in navigation order."""

from __future__ import annotations

from types import ModuleType

from keyless.console.pages import audit, debug, overview

PAGES: tuple[ModuleType, ...] = (overview, debug, audit)
