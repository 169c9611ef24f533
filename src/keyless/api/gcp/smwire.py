"""Secret Manager's JSON shapes (proto3 JSON of google.cloud.secretmanager.v1) and its refusals.

SDK behaviour pinned here (google-cloud-secret-manager 2.x, REST transport):
- every call carries ``$alt=json;enum-encoding=int``: enums (a version's ``state``) are then
  answered as numbers; without it (curl), as names;
- ``dataCrc32c`` is an int64, so a JSON string; timestamps are RFC 3339 with a ``Z``;
- names carry the project *number* and the resolved version number, as Google's do.

Google's messages copied: 404 ``Secret [NAME] not found or has no versions.`` (access),
``Secret [NAME] not found.``, ``Secret Version [NAME] not found.``; 400 FAILED_PRECONDITION
``Secret Version [NAME] is in DISABLED state.`` (and DESTROYED); 409 ALREADY_EXISTS
``Secret [NAME] already exists.``; 403 ``Permission 'P' denied for resource 'R' (or it may not
exist).``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keyless.api.gcp.wire import GoogleError, permission_denied
from keyless.core import gcpsecrets as gsm
from keyless.core.secrets import SecretVersion

DOMAIN = "secretmanager.googleapis.com"
AUTOMATIC: dict[str, Any] = {"automatic": {}}


@dataclass(frozen=True, slots=True)
class Style:
    """How this request wants its answer: enums as numbers (the client) or names (curl)."""

    enum_ints: bool
    now: float

    def state(self, name: str) -> str | int:
        return gsm.STATE_NUMBERS[name] if self.enum_ints else name


def version_body(
    style: Style, resource: str, props: SecretVersion, *, destroyed_at: float | None = None
) -> dict[str, Any]:
    state = gsm.state(props, style.now)
    out: dict[str, Any] = {
        "name": resource,
        "createTime": gsm.timestamp(props.created),
        "state": style.state(state),
        "replicationStatus": AUTOMATIC,
        "etag": version_etag(props),
        "clientSpecifiedPayloadChecksum": gsm.client_checksum(props),
    }
    if state == gsm.DESTROYED:
        # keyless's store keeps no destroy time; the version's last change is the best known
        out["destroyTime"] = gsm.timestamp(destroyed_at or props.updated)
    return out


def version_etag(props: SecretVersion) -> str:
    return gsm.etag(props.version, props.enabled, props.destroyed, props.updated)


def secret_body(resource: str, created: float, current: SecretVersion) -> dict[str, Any]:
    return {
        "name": resource,
        "replication": AUTOMATIC,
        "createTime": gsm.timestamp(created),
        "labels": gsm.labels(current.tags),
        "etag": secret_etag(current),
    }


def secret_etag(current: SecretVersion) -> str:
    return gsm.etag(current.version, current.updated, sorted(gsm.labels(current.tags).items()))


# -- refusals ------------------------------------------------------------------------------


def denied(permission: str, resource: str, why: str = "") -> GoogleError:
    return permission_denied(permission, resource[:512], DOMAIN, why)


def secret_not_found(resource: str, *, access: bool = False) -> GoogleError:
    tail = " not found or has no versions." if access else " not found."
    return GoogleError(404, f"Secret [{resource}]{tail}")


def version_not_found(resource: str) -> GoogleError:
    return GoogleError(404, f"Secret Version [{resource}] not found.")


def not_enabled(resource: str, state: str) -> GoogleError:
    return GoogleError(
        400, f"Secret Version [{resource}] is in {state} state.", rpc_status="FAILED_PRECONDITION"
    )


def already_exists(resource: str, extra: str = "") -> GoogleError:
    return GoogleError(409, f"Secret [{resource}] already exists.{extra}")


def etag_mismatch(resource: str) -> GoogleError:
    return GoogleError(
        409,
        f"The etag provided does not match the current etag of [{resource}].",
        rpc_status="ABORTED",
    )


def invalid(message: str) -> GoogleError:
    return GoogleError(400, message)
