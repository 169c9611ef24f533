"""core/awssession.py: session credentials recomputed from the session token alone."""

from __future__ import annotations

import re

from keyless.core.awssession import SessionKeys, access_key_id
from keyless.core.envelope import RootKeys

ROOT_A = RootKeys((b"a" * 32,))
ROOT_B = RootKeys((b"b" * 32,))
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJhYmMifQ.c2ln"


def test_credentials_have_aws_forms() -> None:
    creds = SessionKeys(lambda: ROOT_A).issue(TOKEN, "abc")
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", creds.access_key_id)
    assert re.fullmatch(r"[A-Za-z0-9+/]{40}", creds.secret_access_key)
    assert creds.session_token == TOKEN
    assert creds.access_key_id == access_key_id("abc") != access_key_id("abd")
    assert creds.secret_access_key not in repr(creds) and TOKEN not in repr(creds)


def test_secret_recomputed_from_the_token_by_another_process_with_the_same_root_key() -> None:
    issued = SessionKeys(lambda: ROOT_A).issue(TOKEN, "abc")
    replica = SessionKeys(lambda: RootKeys((b"a" * 32,)))  # same key, another object
    assert replica.secrets(TOKEN) == [issued.secret_access_key]
    assert SessionKeys(lambda: ROOT_B).secrets(TOKEN) != [issued.secret_access_key]
    other = SessionKeys(lambda: ROOT_A).issue(TOKEN[:-1] + "x", "abc")
    assert other.secret_access_key != issued.secret_access_key  # bound to the whole token


def test_root_rotation_window_tries_both_keys_then_drops_the_old() -> None:
    current = [ROOT_A]
    keys = SessionKeys(lambda: current[0])
    old = keys.issue(TOKEN, "abc").secret_access_key
    current[0] = RootKeys((b"b" * 32, b"a" * 32))  # begin_rotation: new key first
    secrets = keys.secrets(TOKEN)
    assert secrets[1] == old and secrets[0] != old
    assert keys.issue(TOKEN, "abc").secret_access_key == secrets[0]
    current[0] = RootKeys((b"b" * 32,))  # finish_rotation
    assert old not in keys.secrets(TOKEN)
