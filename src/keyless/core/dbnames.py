"""The names of the database secrets engine (CONTRACT.md "The agent and the database engine";
docs/databases.md). Shared by the server's engine and the agent, so both map names one way.

- A registered database NAME and each of its roles ROLE are plain names: letters, digits,
  ``_`` and ``-`` (no dot, no slash), at most 63 characters.
- The Vault dialect has one flat role namespace under ``database/creds/``; keyless's
  DATABASE/ROLE is the Vault role ``DATABASE.ROLE`` (``vault_role``). The dot cannot occur in
  either name, so ``parse_vault_role`` splits it back unambiguously.
- A lease id is Vault's shape, ``database/creds/VAULT_ROLE/ID``, ID 24 random letters and
  digits (``lease_id``); ``parse_lease_id`` gives back (database, role, ID).
- The PostgreSQL user made for a lease is ``v-IDENTITY-ROLE-RANDOM`` cut to 63 bytes
  (PostgreSQL's NAMEDATALEN - 1), as Vault's ``v-{{display_name}}-{{role}}-{{random}}``.
- The RBAC scope of "get credentials for DATABASE ROLE" is ``/databases/DATABASE/roles/ROLE``.
"""

from __future__ import annotations

import re
import secrets as _secrets

from keyless.core.errors import InvalidRequest

LEASE_PREFIX = "database/creds/"
PG_NAME_MAX = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer identifiers
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_LEASE_ID = re.compile(r"[A-Za-z0-9]{24}")
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_USER_CHARS = re.compile(r"[^a-z0-9_-]+")


def check_name(kind: str, name: str) -> str:
    """``name`` when it is a valid database or role name; InvalidRequest otherwise."""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"{kind} name {name[:80]!r} must be 1-63 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def vault_role(database: str, role: str) -> str:
    """The Vault dialect's role name for keyless's DATABASE/ROLE: ``DATABASE.ROLE``."""
    return f"{check_name('database', database)}.{check_name('role', role)}"


def parse_vault_role(name: str) -> tuple[str, str]:
    """(database, role) of a Vault role name ``DATABASE.ROLE``; InvalidRequest otherwise."""
    database, dot, role = name.partition(".")
    if not dot:
        raise InvalidRequest(f"database role {name[:160]!r} must be DATABASE.ROLE")
    return check_name("database", database), check_name("role", role)


def parse_pair(text: str) -> tuple[str, str]:
    """(database, role) of the command line's ``DATABASE/ROLE`` (the agent's flags)."""
    database, slash, role = text.partition("/")
    if not slash:
        raise InvalidRequest(f"{text[:160]!r} must be DATABASE/ROLE")
    return check_name("database", database), check_name("role", role)


def new_lease_suffix(token: str | None = None) -> str:
    """24 random letters and digits (Vault's lease id suffix); ``token`` for tests."""
    return token if token is not None else "".join(_secrets.choice(_ALPHABET) for _ in range(24))


def lease_id(database: str, role: str, suffix: str) -> str:
    """``database/creds/DATABASE.ROLE/SUFFIX``, the lease id every surface shows."""
    if not _LEASE_ID.fullmatch(suffix):
        raise InvalidRequest("a lease id ends with 24 letters or digits")
    return f"{LEASE_PREFIX}{vault_role(database, role)}/{suffix}"


def parse_lease_id(text: str) -> tuple[str, str, str]:
    """(database, role, suffix) of a lease id; InvalidRequest for anything else."""
    if not text.startswith(LEASE_PREFIX):
        raise InvalidRequest(f"lease id {text[:160]!r} is not database/creds/DATABASE.ROLE/ID")
    name, slash, suffix = text[len(LEASE_PREFIX) :].partition("/")
    if not slash or not _LEASE_ID.fullmatch(suffix):
        raise InvalidRequest(f"lease id {text[:160]!r} is not database/creds/DATABASE.ROLE/ID")
    database, role = parse_vault_role(name)
    return database, role, suffix


def scope(database: str, role: str) -> str:
    """The RBAC scope of getting credentials for DATABASE/ROLE."""
    return f"/databases/{database}/roles/{role}"


def username(identity: str, role: str, random_part: str | None = None) -> str:
    """``v-IDENTITY-ROLE-RANDOM`` in lower case, cut to 63 characters; RANDOM (20 letters and
    digits) is kept whole by cutting IDENTITY and ROLE first."""
    rnd = random_part if random_part is not None else new_lease_suffix()[:20].lower()
    ident = _USER_CHARS.sub("_", identity.lower())[:16] or "x"
    rol = _USER_CHARS.sub("_", role.lower())[:20] or "x"
    return f"v-{ident}-{rol}-{rnd}"[:PG_NAME_MAX]
