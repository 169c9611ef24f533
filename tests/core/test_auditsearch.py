"""The audit search's rules: the dialect of an action, the query's checks, the window one
search reads and the cursor it hands back."""

from __future__ import annotations

import pytest

from keyless.core.audit import AuditEvent
from keyless.core.auditchain import AuditRow
from keyless.core.auditsearch import AuditQuery, dialect_of, page_of, window
from keyless.core.errors import InvalidRequest


@pytest.mark.parametrize(
    ("action", "dialect"),
    [
        ("token.exchange.client_credentials", "azure"),
        ("token.exchange.token-exchange", "oauth"),
        ("token.exchange.aws-sts", "aws"),
        ("token.exchange.gcp-sts", "gcp"),
        ("token.exchange.gcp-impersonate", "gcp"),
        ("token.exchange.vault-login", "vault"),
        ("vault.mount", "vault"),
        ("token.exchange.spiffe-x509", "spiffe"),
        ("token.exchange.spiffe-jwt", "spiffe"),
        ("identity create", "admin"),
        ("secrets/getSecret", None),
        ("database.creds", None),
        ("token.exchange.something-new", None),
    ],
)
def test_dialect_of(action: str, dialect: str | None) -> None:
    assert dialect_of(action) == dialect


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"result": "maybe"}, "result must be one of success, failure, pending"),
        ({"dialect": "ftp"}, "dialect must be one of azure, oauth, aws, gcp, vault, spiffe, admin"),
        ({"namespace": "x" * 300}, "namespace must be 1..256 characters"),
        ({"before": 5, "after": 1}, "not both"),
        ({"limit": 0}, "limit must be in 1..200"),
        ({"scan": 50_001}, "scan must be in 1..50000"),
    ],
)
def test_query_refuses(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        AuditQuery(**kw)  # type: ignore[arg-type]


def test_window_and_cursor() -> None:
    assert window(AuditQuery(scan=10), 100) == (91, 100)
    assert window(AuditQuery(scan=10, before=50), 100) == (40, 49)
    assert window(AuditQuery(scan=10, before=5), 100) == (1, 4)
    assert window(AuditQuery(scan=10, after=95), 100) == (96, 100)
    assert window(AuditQuery(scan=10, after=0), 100) == (1, 10)
    assert window(AuditQuery(), 0) == (1, 0)  # empty log: nothing to read
    row = AuditRow(7, "0" * 64, "1" * 64, AuditEvent(0.0, None, None, "a", "t", "success"))
    assert page_of(AuditQuery(limit=1), [row], 1, 10).next == 7
    assert page_of(AuditQuery(limit=5), [row], 3, 10).next == 3
    assert page_of(AuditQuery(limit=5), [row], 1, 10).next is None
    assert page_of(AuditQuery(after=4, limit=5), [row], 5, 9).next == 9
    assert page_of(AuditQuery(after=4, limit=1), [row], 5, 9).next == 7
    assert page_of(AuditQuery(after=4), [], 5, 4).next == 4
    assert AuditQuery(exchanges=True).filtered and not AuditQuery(tenant_id="t").filtered
