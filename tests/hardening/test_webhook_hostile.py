"""Hostile AdmissionReviews: every malformed body gets a 400 (not an AdmissionReview, or no
usable uid) or an ``allowed: false`` review with a reason (the uid is readable), never a 500.

Table-driven over the real webhook listener (HTTPS, the test API server's client certificate),
then a Hypothesis property over the pure steps: any JSON value, or any bytes, becomes a
well-formed review or a :class:`MalformedReview`, and nothing else is raised.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyless.k8s import admission, inject, manifests, names
from tests.hardening.tally import count
from tests.k8s.cases import AUTHORITY, FIXTURES, TENANT, answer
from tests.k8s.webhook import Webhook, start_webhook
from tests.support.adminapi import admin_call
from tests.support.server import ServerFactory

UID = "4b1f3c2a-9d8e-4f70-a6b5-c4d3e2f1a0b9"
BASE = json.loads((FIXTURES / "selected-basic.json").read_text())["review"]
BASE["request"]["uid"] = UID
CLIENT = "@CLIENT@"  # replaced by the running keyless's client id when sent
BASE["request"]["object"]["metadata"]["annotations"] = {names.KEYLESS_CLIENT_ID_ANNOTATION: CLIENT}
POD = "request.object"


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Webhook, str]]:
    """keyless with the webhook listener and no Kubernetes API (no kubeconfig): pods that
    name their client id (``keyless.dev/client-id``) are injected, others refused."""
    tmp = tmp_path_factory.mktemp("hostile-webhook")
    factory = ServerFactory(tmp)
    env = {"KUBECONFIG": str(tmp / "no-kubeconfig"), "HOME": str(tmp)}
    try:
        webhook = start_webhook(factory, tmp, env=env)
        with webhook.server.admin() as admin:  # the CLI's own admin API, without a process
            made = admin_call(admin, "POST", "/v1/identities", {"name": "app"})
        yield webhook, made["client_id"]
    finally:
        factory.stop_all()
        log = "".join(s.log for s in factory.running)
        assert "unhandled error" not in log, "the webhook answered a 500"


def review(change: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """The recorded selected pod's review, changed by ``change`` (which edits it in place)."""
    body = copy.deepcopy(BASE)
    if change is not None:
        change(body)
    return body


def at(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting ``path`` (dots, ``[i]`` for list items) to ``value``."""

    def edit(body: dict[str, Any]) -> None:
        node: Any = body
        keys = path.replace("[", ".[").split(".")
        for key in keys[:-1]:
            node = node[int(key[1:-1])] if key.startswith("[") else node[key]
        last = keys[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value

    return edit


def deep(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = {"a": [value]}
    return value


def text(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Hostile:
    id: str
    body: bytes
    status: int  # 400, 413, or 200
    allowed: bool | None = None  # for 200
    says: str = ""  # in the error or status message


def bad_400(id: str, body: bytes, says: str = "") -> Hostile:
    return Hostile(id, body, 400, None, says)


def refused(id: str, edit: Callable[[dict[str, Any]], Any], says: str) -> Hostile:
    return Hostile(id, text(review(edit)), 200, False, says)


def _dup(key: str) -> bytes:
    raw = text(review())
    return raw.replace(b'{"kind": "AdmissionReview"', b'{"kind": "x", "kind": "AdmissionReview"')


def _without(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        parent, _, key = path.rpartition(".")
        node: Any = body
        for part in parent.split(".") if parent else []:
            node = node[part]
        node.pop(key)

    return edit


NOT_A_REVIEW = [
    bad_400("empty-body", b"", "not JSON"),
    bad_400("not-json", b"not json", "not JSON"),
    bad_400("invalid-utf8", b'{"kind": "\xff\xfe"}', "not JSON"),
    bad_400("utf16-review", json.dumps(BASE).encode("utf-16"), "not JSON"),
    bad_400("bom-prefix", b"\xef\xbb\xbf" + text(review()), "not JSON"),
    bad_400("trailing-garbage", text(review()) + b" {}", "not JSON"),
    bad_400("null", b"null", "not an AdmissionReview"),
    bad_400("list", b"[]", "not an AdmissionReview"),
    bad_400("number", b"1", "not an AdmissionReview"),
    bad_400("string", b'"AdmissionReview"', "not an AdmissionReview"),
    bad_400("true", b"true", "not an AdmissionReview"),
    bad_400("empty-object", b"{}", "not an AdmissionReview"),
    bad_400("kind-pod", text(review(at("kind", "Pod"))), "not an AdmissionReview"),
    bad_400("kind-int", text(review(at("kind", 7))), "not an AdmissionReview"),
    bad_400("kind-list", text(review(at("kind", ["AdmissionReview"]))), "not an AdmissionReview"),
    bad_400("api-v1beta1", text(review(at("apiVersion", "admission.k8s.io/v1beta1"))), "v1beta1"),
    bad_400("api-missing", text(review(_without("apiVersion"))), "apiVersion"),
    bad_400("api-list", text(review(at("apiVersion", ["admission.k8s.io/v1"]))), "apiVersion"),
    bad_400("api-int", text(review(at("apiVersion", 1))), "apiVersion"),
    bad_400("request-missing", text(review(_without("request"))), "no request"),
    bad_400("request-null", text(review(at("request", None))), "no request"),
    bad_400("request-list", text(review(at("request", [BASE["request"]]))), "no request"),
    bad_400("request-string", text(review(at("request", "{}"))), "no request"),
    bad_400("uid-missing", text(review(_without("request.uid"))), "request.uid"),
    bad_400("uid-null", text(review(at("request.uid", None))), "request.uid"),
    bad_400("uid-int", text(review(at("request.uid", 12345))), "request.uid"),
    bad_400("uid-object", text(review(at("request.uid", {"uid": UID}))), "request.uid"),
    bad_400("uid-empty", text(review(at("request.uid", ""))), "request.uid"),
    bad_400("uid-huge", text(review(at("request.uid", "u" * 129))), "request.uid"),
    bad_400("uid-newline", text(review(at("request.uid", UID + "\n"))), "request.uid"),
    bad_400("uid-space", text(review(at("request.uid", "a b"))), "request.uid"),
    bad_400("uid-non-ascii", text(review(at("request.uid", "ü-uid"))), "request.uid"),
    bad_400("uid-bidi", text(review(at("request.uid", "abc\u202edef"))), "request.uid"),
    bad_400(
        "uid-lone-surrogate",
        text(review()).replace(UID.encode(), b"\\ud800"),
        "request.uid",
    ),
    bad_400("duplicate-kind", _dup("kind"), "duplicate JSON member 'kind'"),
    bad_400(
        "duplicate-uid",
        text(review()).replace(
            b'"uid": "' + UID.encode(), b'"uid": "x", "uid": "' + UID.encode(), 1
        ),
        "duplicate JSON member 'uid'",
    ),
    bad_400(
        "duplicate-in-pod",
        text(review()).replace(b'"labels": {', b'"labels": {"a": "1", "a": "2", ', 1),
        "duplicate JSON member 'a'",
    ),
    bad_400("nan", text(review()).replace(b'"dryRun": false', b'"dryRun": NaN'), "not JSON"),
    bad_400(
        "infinity", text(review()).replace(b'"dryRun": false', b'"dryRun": -Infinity'), "not JSON"
    ),
    bad_400(
        "5000-digit-int",
        text(review()).replace(b'"dryRun": false', b'"dryRun": ' + b"9" * 5000),
        "not JSON",
    ),
    bad_400("nest-100000-lists", b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    bad_400("nest-100000-objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nests too deeply"),
    bad_400(
        "nest-100000-in-pod",
        text(review()).replace(b'"dryRun": false', b'"dryRun": ' + b"[" * 100_000 + b"]" * 100_000),
        "nests too deeply",
    ),
]


def allowed(
    id: str, edit: Callable[[dict[str, Any]], Any] | None, *, patched: bool = True
) -> Hostile:
    return Hostile(id, text(review(edit)), 200, True, "patch" if patched else "")


def both(*edits: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        for one in edits:
            one(body)

    return edit


def _surrogate(where: bytes) -> bytes:
    raw = text(review())
    assert where in raw
    return raw.replace(where, where[:-1] + b"\\udc00" + where[-1:], 1)


def _many_containers(n: int) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        first = body["request"]["object"]["spec"]["containers"][0]
        env = [{"name": f"VAR_{i}", "value": "x" * 40} for i in range(20)]
        body["request"]["object"]["spec"]["containers"] = [
            {**first, "name": f"c{i}", "env": env} for i in range(n)
        ]

    return edit


C0 = f"{POD}.spec.containers[0]"
BAD_REQUEST = [
    refused("request-kind-string", at("request.kind", "Pod"), "request.kind"),
    refused("request-kind-null", at("request.kind", None), "request.kind"),
    refused("request-kind-kind-int", at("request.kind.kind", 5), "request.kind"),
    refused("request-kind-kind-missing", at("request.kind", {"group": ""}), "request.kind"),
    refused("operation-int", at("request.operation", 1), "request.operation"),
    refused("operation-unknown", at("request.operation", "DESTROY"), "request.operation"),
    refused("operation-null", at("request.operation", None), "request.operation"),
    refused("operation-list", at("request.operation", ["CREATE"]), "request.operation"),
    refused("namespace-int", at("request.namespace", 3), "request.namespace"),
    refused("namespace-list", at("request.namespace", ["demo"]), "request.namespace"),
    refused("dry-run-string", at("request.dryRun", "yes"), "request.dryRun"),
    refused("dry-run-int", at("request.dryRun", 1), "request.dryRun"),
    refused("object-string", at(POD, "pod"), "not a Pod object"),
    refused("object-list", at(POD, []), "not a Pod object"),
    refused("object-null", at(POD, None), "not a Pod object"),
    refused("object-number", at(POD, 1e300), "not a Pod object"),
    refused("metadata-list", at(f"{POD}.metadata", []), "metadata is not"),
    refused("metadata-string", at(f"{POD}.metadata", "m"), "metadata is not"),
    refused("name-int", at(f"{POD}.metadata.name", 7), "metadata.name"),
    refused("generate-name-list", at(f"{POD}.metadata.generateName", ["a"]), "generateName"),
    refused("labels-list", at(f"{POD}.metadata.labels", ["a"]), "metadata.labels"),
    refused(
        "label-value-int",
        at(f"{POD}.metadata.labels", {names.USE_LABEL: True}),
        "metadata.labels",
    ),
    refused("label-value-null", at(f"{POD}.metadata.labels.app", None), "metadata.labels"),
    refused("annotations-list", at(f"{POD}.metadata.annotations", []), "annotations"),
    refused(
        "annotation-value-int",
        at(f"{POD}.metadata.annotations", {names.EXPIRATION_ANNOTATION: 3600}),
        "annotations",
    ),
    refused(
        "annotation-value-object",
        at(f"{POD}.metadata.annotations", {names.KEYLESS_CLIENT_ID_ANNOTATION: {}}),
        "annotations",
    ),
    refused("spec-string", at(f"{POD}.spec", "spec"), "spec is not"),
    refused("spec-list", at(f"{POD}.spec", [{}]), "spec is not"),
    refused("service-account-int", at(f"{POD}.spec.serviceAccountName", 1), "serviceAccountName"),
    refused("volumes-object", at(f"{POD}.spec.volumes", {}), "spec.volumes"),
    refused("volumes-string", at(f"{POD}.spec.volumes", "v"), "spec.volumes"),
    refused("volume-int", at(f"{POD}.spec.volumes", [1]), "spec.volumes"),
    refused("volume-name-list", at(f"{POD}.spec.volumes[0].name", []), "spec.volumes"),
    refused("containers-string", at(f"{POD}.spec.containers", "c"), "spec.containers"),
    refused("containers-int", at(f"{POD}.spec.containers", 3), "spec.containers"),
    refused("containers-object", at(f"{POD}.spec.containers", {}), "spec.containers"),
    refused("container-null", at(f"{POD}.spec.containers", [None]), "spec.containers"),
    refused("container-string", at(f"{POD}.spec.containers", ["app"]), "spec.containers"),
    refused("container-name-int", at(f"{C0}.name", 5), "spec.containers"),
    refused(
        "init-container-env-int",
        at(f"{POD}.spec.initContainers", [{"name": "i", "env": 5}]),
        "spec.initContainers[0].env",
    ),
    refused("env-int", at(f"{C0}.env", 5), "spec.containers[0].env"),
    refused("env-strings", at(f"{C0}.env", ["A=1"]), "spec.containers[0].env"),
    refused("env-name-int", at(f"{C0}.env", [{"name": 1}]), "spec.containers[0].env"),
    refused("env-null-item", at(f"{C0}.env", [None]), "spec.containers[0].env"),
    refused("env-object", at(f"{C0}.env", {"name": "A"}), "spec.containers[0].env"),
    refused("mounts-string", at(f"{C0}.volumeMounts", "m"), "volumeMounts"),
    refused(
        "mount-path-int", at(f"{C0}.volumeMounts", [{"name": "a", "mountPath": 1}]), "volumeMounts"
    ),
    refused("mount-name-object", at(f"{C0}.volumeMounts", [{"name": {}}]), "volumeMounts"),
    refused("nest-70-in-pod", at(f"{POD}.spec.affinity", deep(35)), "nests deeper than 64"),
    refused("nest-70-in-user-info", at("request.userInfo.extra", deep(35)), "nests deeper"),
    Hostile(
        "surrogate-in-pod-name",
        _surrogate(b'"generateName": "app-5d8f7c9b6d-"'),
        200,
        False,
        "lone UTF-16 surrogate",
    ),
    Hostile(
        "surrogate-in-label-key",
        text(review()).replace(b'"app": "app"', b'"\\ud800": "app"', 1),
        200,
        False,
        "lone UTF-16 surrogate",
    ),
]

ROBUST = [
    allowed("baseline", None),
    allowed("huge-float-ignored", at(f"{POD}.spec.priority", 1e308)),
    Hostile(
        "overflowing-float-ignored",
        text(review()).replace(b'"priority": 0', b'"priority": 1e400'),
        200,
        True,
        "patch",
    ),
    Hostile(
        "4000-digit-int-ignored",
        text(review()).replace(b'"priority": 0', b'"priority": ' + b"7" * 4000),
        200,
        True,
        "patch",
    ),
    allowed("nulls-where-optional", both(at(f"{C0}.env", None), at(f"{C0}.volumeMounts", None))),
    allowed("volumes-null", at(f"{POD}.spec.volumes", None)),
    allowed("metadata-null", at(f"{POD}.metadata", None), patched=False),
    allowed("labels-null", at(f"{POD}.metadata.labels", None), patched=False),
    allowed("spec-null", at(f"{POD}.spec", None), patched=False),
    allowed("containers-empty", at(f"{POD}.spec.containers", []), patched=False),
    allowed(
        "update-with-garbage-object",
        both(at("request.operation", "UPDATE"), at(POD, "x")),
        patched=False,
    ),
    allowed(
        "delete-without-object",
        both(at("request.operation", "DELETE"), at(POD, None)),
        patched=False,
    ),
    allowed(
        "deployment-kind",
        both(at("request.kind.kind", "Deployment"), at(POD, [1, 2])),
        patched=False,
    ),
    allowed("nest-30-in-pod", at(f"{POD}.spec.affinity", deep(15))),
    allowed("control-chars-in-names", at(f"{C0}.name", "app\x1b[31m\u202e\n")),
    allowed(
        "ten-thousand-labels",
        at(
            f"{POD}.metadata.labels",
            {names.USE_LABEL: "true", **{f"l{i}": "v" for i in range(10_000)}},
        ),
    ),
    allowed(
        "1.5-MiB-annotation",
        at(
            f"{POD}.metadata.annotations",
            {names.KEYLESS_CLIENT_ID_ANNOTATION: CLIENT, "big": "x" * 1_500_000},
        ),
    ),
    allowed("huge-pod-1000-containers", _many_containers(1000)),
    Hostile(
        "pod-annotation-bad-expiry",
        text(
            review(
                at(
                    f"{POD}.metadata.annotations",
                    {
                        names.KEYLESS_CLIENT_ID_ANNOTATION: CLIENT,
                        names.EXPIRATION_ANNOTATION: "1e9",
                    },
                )
            )
        ),
        200,
        False,
        "is not a whole number of seconds",
    ),
    Hostile(
        "needs-the-cluster",
        text(review(at(f"{POD}.metadata.annotations", None))),
        200,
        False,
        "no Kubernetes API access",
    ),
    Hostile(
        "over-the-body-cap",
        text(review(at(f"{POD}.metadata.annotations.big", "x" * 3_000_000))),
        413,
    ),
]

CASES = NOT_A_REVIEW + BAD_REQUEST + ROBUST


def api_server_deadline() -> float:
    """How long the API server waits for the webhook: ``timeoutSeconds`` in keyless's own
    manifests (past it, ``failurePolicy: Fail`` refuses the pod)."""
    (config,) = [o for o in manifests.render() if o["kind"] == "MutatingWebhookConfiguration"]
    return float(config["webhooks"][0]["timeoutSeconds"])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_review(hook: tuple[Webhook, str], case: Hostile) -> None:
    webhook, client_id = hook
    body = case.body.replace(CLIENT.encode(), client_id.encode())
    # The client waits as the API server does, then gives up (httpx raises ReadTimeout): the
    # event asserted is an answer the API server would still have taken, not a time measured.
    # The costly classes of input (deep nesting, huge numbers, the body cap) are refused by
    # their own guards, which the expected messages below name.
    verify = webhook.context(webhook.pki)
    with httpx.Client(base_url=webhook.url, verify=verify, timeout=api_server_deadline()) as http:
        headers = {"content-type": "application/json"}
        response = http.post("/k8s/mutate", content=body, headers=headers)
    count("webhook_hostile")
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    if case.status != 200:
        message = response.json()["error"]["message"]
        assert case.says in message, message
        return
    reply = response.json()
    assert set(reply) == {"apiVersion", "kind", "response"}
    assert (reply["apiVersion"], reply["kind"]) == (admission.API_VERSION, "AdmissionReview")
    answer_ = reply["response"]
    assert answer_["uid"] == UID and answer_["allowed"] is case.allowed, answer_
    if case.allowed:
        assert ("patch" in answer_) is (case.says == "patch"), answer_.keys()
        if "patch" in answer_:
            assert admission.decode_patch(reply)
    else:
        assert set(answer_) == {"uid", "allowed", "status"}
        status = answer_["status"]
        assert status["code"] == 400 and status["reason"] == "BadRequest"
        assert case.says in status["message"], status["message"]


# -- the pure steps, for any input -------------------------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,  # no wall-clock budget per example: a slow machine is not a failure
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SETTINGS = inject.WebhookSettings(authority_host=AUTHORITY, tenant_id=TENANT)
SA = inject.ServiceAccount(
    "demo",
    "app",
    {names.CLIENT_ID_ANNOTATION: "c7f3a1e2-0000-4000-8000-000000000001"},
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["true", "CREATE", "Pod", names.USE_LABEL, "0", "3600", "a;b", ""])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["name", "env", "metadata", "spec", "kind"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
PATHS = [
    "request",
    "request.uid",
    "request.kind",
    "request.kind.kind",
    "request.operation",
    "request.namespace",
    "request.dryRun",
    POD,
    f"{POD}.metadata",
    f"{POD}.metadata.labels",
    f"{POD}.metadata.annotations",
    f"{POD}.metadata.generateName",
    f"{POD}.spec",
    f"{POD}.spec.serviceAccountName",
    f"{POD}.spec.volumes",
    f"{POD}.spec.volumes[0]",
    f"{POD}.spec.containers",
    f"{POD}.spec.containers[0]",
    f"{C0}.name",
    f"{C0}.env",
    f"{C0}.volumeMounts",
    f"{C0}.volumeMounts[0]",
    f"{C0}.volumeMounts[0].mountPath",
]


def _well_formed(review_: dict[str, Any]) -> None:
    # What Starlette's JSONResponse does with it: no NaN, UTF-8 encodable.
    json.dumps(review_, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert review_["apiVersion"] == admission.API_VERSION and review_["kind"] == "AdmissionReview"
    response = review_["response"]
    assert isinstance(response["uid"], str) and isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert isinstance(response["status"]["message"], str) and response["status"]["message"]
    else:
        admission.decode_patch(review_)


def _answer_all(value: object) -> None:
    for sa in (None, SA):
        with contextlib.suppress(admission.MalformedReview):
            _well_formed(answer(value, sa, SETTINGS))


@pytest.mark.parametrize(
    "request_value",
    [
        pytest.param({"uid": "u1", 0: "x"}, id="int-member-name"),
        pytest.param({"uid": "u1", "object": {None: 1}}, id="none-member-name-deeper"),
        pytest.param({"uid": "u1", "object": {("a",): 1}}, id="tuple-member-name"),
    ],
)
def test_a_decoded_review_with_non_string_member_names_is_refused(request_value: Any) -> None:
    """JSON has only string member names, but read_review takes any decoded object (a fuzz
    case once built one): it is refused with a reason, never an exception."""
    review = {"apiVersion": admission.API_VERSION, "kind": "AdmissionReview"}
    with pytest.raises(admission.RefusedReview, match="member name that is not a string"):
        admission.read_review({**review, "request": request_value})
    _answer_all({**review, "request": request_value})


@FUZZ
@given(value=json_values)
def test_any_json_value_is_answered_or_a_400(value: Any) -> None:
    count("fuzz")
    _answer_all(value)


@FUZZ
@given(
    edits=st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=3),
    by_service_account=st.booleans(),
)
def test_any_field_of_a_real_review_replaced_is_answered_or_a_400(
    edits: list[tuple[str, Any]], by_service_account: bool
) -> None:
    """The recorded review with up to three fields, at every level, set to any JSON value."""
    count("fuzz")
    body = review()
    if by_service_account:  # no keyless.dev/client-id: the identity comes from SA
        body["request"]["object"]["metadata"]["annotations"] = {}
    for path, value in edits:
        with_edit = copy.deepcopy(body)
        try:
            at(path, value)(with_edit)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed the parent
        body = with_edit
    _answer_all(body)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_parsed_or_a_400(raw: bytes) -> None:
    count("fuzz")
    with contextlib.suppress(admission.MalformedReview, admission.RefusedReview):
        admission.parse_review(raw)
