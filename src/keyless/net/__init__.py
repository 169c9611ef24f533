"""Outbound network clients (kept out of ``keyless.core``, which does no I/O of its own)."""
