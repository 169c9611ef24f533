"""Alembic environment: always given a live connection by ``keyless.store.migrate``."""

from __future__ import annotations

from alembic import context

from keyless.store.schema import live_state_index, metadata

if not any(i.name == "ux_signing_keys_live_state" for i in metadata.tables["signing_keys"].indexes):
    live_state_index()  # attaches itself to the table (declared here, see schema.py)
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
