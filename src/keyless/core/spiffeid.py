"""Which SPIFFE ID a verified platform token gets (docs/spiffe.md "SPIFFE IDs").

- A Kubernetes service-account token (``kubernetes.io`` claims):
  ``spiffe://TD/ns/NAMESPACE/sa/SERVICE_ACCOUNT`` (``spiffenames.kubernetes_id``).
- Any other token: ``spiffe://TD/iss/ISSUER_HASH/sub/SUBJECT``, ISSUER_HASH the first 16 hex
  digits of SHA-256 of the issuer URL; SUBJECT the ``sub`` claim as is when it is one SPIFFE
  path segment (letters, digits, ``.``, ``_``, ``-``), else ``b64.`` + its base64url (so a
  GitHub ``repo:org/app:ref:refs/heads/main`` stays one unambiguous segment).
"""

from __future__ import annotations

import hashlib
import re

from keyless.core.assertion import VerifiedAssertion
from keyless.core.jose import b64url_encode
from keyless.core.spiffenames import kubernetes_id, spiffe_id

_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,255}")


def issuer_hash(issuer: str) -> str:
    return hashlib.sha256(issuer.encode()).hexdigest()[:16]


def subject_segment(subject: str) -> str:
    if (
        _SEGMENT.fullmatch(subject)
        and subject not in (".", "..")
        and not subject.startswith("b64.")
    ):
        return subject
    return "b64." + b64url_encode(subject.encode())


def workload_spiffe_id(trust_domain_name: str, verified: VerifiedAssertion) -> str:
    w = verified.workload
    if w is not None and w.namespace and w.service_account:
        return kubernetes_id(trust_domain_name, w.namespace, w.service_account)
    return spiffe_id(
        trust_domain_name,
        f"iss/{issuer_hash(verified.issuer)}/sub/{subject_segment(verified.subject)}",
    )
