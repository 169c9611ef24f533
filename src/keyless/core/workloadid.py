"""The SPIFFE ID a verified platform token would get, for trust-policy conditions (issue 21).

Trust policies' CEL conditions see it as the variable ``spiffe_id`` beside ``claims``
(core/cel.py), so a policy can be written over the identity a workload will carry on the wire::

    spiffe_id == "spiffe://default.keyless/ns/prod/sa/api"
    spiffe_id.startsWith("spiffe://default.keyless/ns/prod/")

The rule is the default of CONTRACT.md "SPIFFE": a Kubernetes token (``kubernetes.io`` claim with
a namespace and a service account) gets ``spiffe://TRUST_DOMAIN/ns/NS/sa/SA``; any other token
``spiffe://TRUST_DOMAIN/iss/H/sub/SUB``, H the first 16 hex digits of SHA-256 of the issuer URL,
when its ``sub`` is a valid SPIFFE path segment. A token that fits neither has no SPIFFE ID
(None), and a condition that refers to ``spiffe_id`` then fails closed.
"""

from __future__ import annotations

import hashlib

from keyless.core.assertion import VerifiedAssertion
from keyless.core.errors import InvalidRequest
from keyless.core.spiffenames import kubernetes_id, spiffe_id

ISSUER_HASH_LENGTH = 16


def issuer_hash(issuer: str) -> str:
    return hashlib.sha256(issuer.encode()).hexdigest()[:ISSUER_HASH_LENGTH]


def workload_spiffe_id(trust_domain: str, verified: VerifiedAssertion) -> str | None:
    """The SPIFFE ID of ``verified`` in ``trust_domain``, or None when it would have none."""
    workload = verified.workload
    try:
        if workload is not None and workload.namespace and workload.service_account:
            return kubernetes_id(trust_domain, workload.namespace, workload.service_account)
        if "/" in verified.subject:
            return None
        return spiffe_id(trust_domain, f"iss/{issuer_hash(verified.issuer)}/sub/{verified.subject}")
    except InvalidRequest:
        return None
