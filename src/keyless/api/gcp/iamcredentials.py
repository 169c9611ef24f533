"""Placeholder: filled in by the Google dialect's work (issue 18)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
