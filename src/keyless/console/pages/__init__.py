"""The console's pages: each module has ``routes``; PAGES lists them in navigation order."""

from __future__ import annotations

from types import ModuleType

from keyless.console.pages import audit, debug, graph, health, manage, overview, vaults

PAGES: tuple[ModuleType, ...] = (overview, graph, debug, audit, health, vaults, manage)
