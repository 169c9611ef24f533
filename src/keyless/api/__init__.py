"""The HTTP edge: one sub-package per wire dialect, each a thin adapter over core."""
