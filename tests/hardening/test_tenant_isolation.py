"""Cross-tenant isolation of trusted issuers, over the real HTTPS server.

Two tenants register the *same* issuer URL, each with its own keys: by uploaded JWKS in both
(distinct kids, or the same kid over different keys), by discovery in one and upload in the
other (in either order), or in one tenant only. Both tenants have an identity trusting that
URL for the same subject. A token signed with one tenant's key must be accepted there and
refused by the other tenant with the exact AADSTS code; removing or replacing one tenant's
issuer must leave the other's untouched; an access token of one tenant must be refused by the
other's vaults; and one tenant's discovery JWKS must never list the other's keys.

``core/federation.py`` ``_cache_id`` is what this guards: an uploaded JWKS is cached under
``upload:TENANT:URL``, a discovered one under its URL.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.hardening.tally import count
from tests.support.oidc import LocalIssuer, jwks_of, new_key, sign
from tests.support.server import RunningServer, ServerFactory
from tests.support.tenants import Admin, exchange, vault_scope

UP, DISC, NONE = "upload", "discovery", "none"
DISC_KID = "disc-1"  # the kid the loopback discovery issuer signs with

UNREGISTERED = 700211  # the issuer is not registered in this tenant
KID = 7000272  # no key with the token's kid
SIG = 700027  # a key with that kid, but the signature does not verify


@dataclass(frozen=True)
class Variant:
    """How tenants A and B each register one issuer URL, and what crossing over answers."""

    id: str
    a: str  # UP | DISC
    b: str  # UP | DISC | NONE
    kid_a: str
    kid_b: str
    a_at_b: int  # AADSTS code for A's token at B's token endpoint
    b_at_a: int | None  # ... and B's at A's (None: B has no key for this URL)
    b_first: bool = False  # B registers before A (the cache is filled in the other order)


VARIANTS = [
    # id, how A registers, how B registers, A's kid, B's kid, A's token at B, B's token at A
    Variant("upload-upload-distinct-kids", UP, UP, "a-1", "b-1", KID, KID),
    Variant("upload-upload-same-kid", UP, UP, "k-1", "k-1", SIG, SIG),
    Variant("upload-upload-same-kid-b-first", UP, UP, "k-1", "k-1", SIG, SIG, True),
    # B uploads a key of its own under the discovered issuer's kid: A must still see only the
    # issuer's real key, and B must not get the issuer's (in both orders of registration).
    Variant("discovery-then-upload-same-kid", DISC, UP, DISC_KID, DISC_KID, SIG, SIG),
    Variant("upload-then-discovery-same-kid", DISC, UP, DISC_KID, DISC_KID, SIG, SIG, True),
    Variant("discovery-and-upload-distinct-kids", DISC, UP, DISC_KID, "b-1", KID, KID),
    Variant("upload-and-discovery-distinct-kids", UP, DISC, "a-1", DISC_KID, KID, KID),
    Variant("upload-only-in-a", UP, NONE, "a-1", "a-1", UNREGISTERED, None),
    Variant("discovery-only-in-a", DISC, NONE, DISC_KID, DISC_KID, UNREGISTERED, None),
]
BY_ID = {v.id: v for v in VARIANTS}


@dataclass
class Side:
    """One tenant's end of a pair: its identity trusting the URL, and the key its tokens use."""

    tenant: str
    identity: str
    client_id: str
    key: rsa.RSAPrivateKey
    kid: str


@dataclass
class Pair:
    variant: Variant
    url: str
    a: Side
    b: Side
    signers: dict[str, tuple[rsa.RSAPrivateKey, str]] = field(default_factory=dict)

    def token(self, signer: str, **claims: Any) -> str:
        key, kid = self.signers[signer]
        return sign(key, iss=self.url, kid=kid, **claims)

    def side(self, name: str) -> Side:
        return self.a if name == "a" else self.b


@dataclass
class World:
    server: RunningServer
    http: httpx.Client  # one keep-alive HTTPS client for every public request
    admin: Admin
    tenants: dict[str, str]  # "a"/"b" -> tenant id
    vaults: dict[str, str]  # "a"/"b" -> vault name
    crowns: dict[str, str]  # "a"/"b" -> the value of the secret in that tenant's vault
    issuers: list[LocalIssuer] = field(default_factory=list)
    uploaded: list[rsa.RSAPrivateKey] = field(default_factory=list)
    pairs: dict[str, Pair] = field(default_factory=dict)
    serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def scope(self) -> str:
        return vault_scope(self.server)

    def exchange(self, at: str, client_id: str, assertion: str) -> httpx.Response:
        return exchange(self.http, self.tenants[at], client_id, assertion, self.scope)

    def build(self, variant: Variant) -> Pair:
        """Register one fresh URL in both tenants as ``variant`` says; identities trust it."""
        n = next(self.serial)
        issuer = None
        if DISC in (variant.a, variant.b):
            issuer = LocalIssuer(path=f"cluster-{n}", kid=DISC_KID)
            self.issuers.append(issuer)
            url = issuer.url
        else:
            url = f"https://shared-{n}.issuer.test/cluster"
        sides: dict[str, Side] = {}
        for name, how, kid in (("a", variant.a, variant.kid_a), ("b", variant.b, variant.kid_b)):
            tenant = self.tenants[name]
            identity = f"app-{n}"
            client_id = self.admin.create_identity(tenant, identity)["client_id"]
            key = issuer.key if how == DISC and issuer else new_key()
            sides[name] = Side(tenant, identity, client_id, key, kid)
        order = ("b", "a") if variant.b_first else ("a", "b")
        for name in order:
            how = variant.a if name == "a" else variant.b
            side = sides[name]
            if how == NONE:
                continue
            if how == UP:
                self.uploaded.append(side.key)
                self.admin.add_issuer(side.tenant, url, jwks_of((side.key, side.kid)))
            else:
                self.admin.add_issuer(side.tenant, url)
            self.admin.trust(side.tenant, side.identity, "fic", url)
        for name, side in sides.items():
            self.admin.assign(
                side.tenant, side.identity, "secrets-user", f"/vaults/{self.vaults[name]}"
            )
        pair = Pair(variant, url, sides["a"], sides["b"])
        pair.signers = {"a": (pair.a.key, pair.a.kid), "b": (pair.b.key, pair.b.kid)}
        return pair

    def pair(self, variant_id: str) -> Pair:
        if variant_id not in self.pairs:
            self.pairs[variant_id] = self.build(BY_ID[variant_id])
        return self.pairs[variant_id]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("isolation")
    factory = ServerFactory(tmp)
    w: World | None = None
    try:
        # --dev: the discovery issuers are plain http on loopback. RS256: keyless's own keys
        # are of the same kind as the uploaded ones, so "never published" is not trivially true.
        server = factory.start("--token-rate-limit", "0", "--signing-alg", "RS256", dev=True)
        admin = Admin(server)
        tenants = {"a": admin.create_tenant("iso-a"), "b": admin.create_tenant("iso-b")}
        assert tenants["a"] != tenants["b"]
        vaults = {"a": "iso-a-vault", "b": "iso-b-vault"}
        crowns = {"a": "tenant-a-crown-17", "b": "tenant-b-crown-29"}
        for name, tenant in tenants.items():
            admin.create_vault(tenant, vaults[name])
            admin.set_secret(tenant, vaults[name], "crown", crowns[name])
        w = World(server, server.client(), admin, tenants, vaults, crowns)
        yield w
    finally:
        if w:
            w.http.close()
            for issuer in w.issuers:
                issuer.close()
        factory.stop_all()


def _assert_refused(response: httpx.Response, code: int) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert "access_token" not in body, body
    assert (body["error"], body["error_codes"]) == ("invalid_client", [code]), body[
        "error_description"
    ]
    assert body["error_description"].startswith(f"AADSTS{code}: ")


def _expect(world: World, pair: Pair, signer: str, at: str, expected: int) -> None:
    """``signer``'s token, presented by ``at``'s identity at ``at``'s token endpoint."""
    response = world.exchange(at, pair.side(at).client_id, pair.token(signer))
    count("isolation")
    if expected == 200:
        assert response.status_code == 200, f"{signer}@{at}: {response.text}"
        assert response.json()["access_token"]
    else:
        _assert_refused(response, expected)


# -- tokens at the token endpoint --------------------------------------------------------------


@pytest.mark.parametrize("variant", [v.id for v in VARIANTS])
def test_each_tenant_accepts_tokens_signed_with_its_own_key(world: World, variant: str) -> None:
    """The control: the refusals below are about the other tenant, not a broken setup."""
    pair = world.pair(variant)
    _expect(world, pair, "a", "a", 200)
    if pair.variant.b != NONE:
        _expect(world, pair, "b", "b", 200)


CROSSINGS = [
    (v.id, direction)
    for v in VARIANTS
    for direction in ("a-token-at-b", "b-token-at-a")
    if direction == "a-token-at-b" or v.b_at_a is not None
]


@pytest.mark.parametrize(
    ("variant", "direction"), CROSSINGS, ids=[f"{v}:{d}" for v, d in CROSSINGS]
)
def test_token_signed_with_one_tenants_key_is_refused_by_the_other(
    world: World, variant: str, direction: str
) -> None:
    pair = world.pair(variant)
    signer, at = ("a", "b") if direction == "a-token-at-b" else ("b", "a")
    code = pair.variant.a_at_b if signer == "a" else pair.variant.b_at_a
    assert code is not None
    _expect(world, pair, signer, at, code)
    # Same again after the other tenant's own token was accepted (its keys are now warm).
    if pair.variant.b != NONE or at == "a":
        _expect(world, pair, at, at, 200)
    _expect(world, pair, signer, at, code)


@pytest.mark.parametrize("variant", [v.id for v in VARIANTS])
def test_issuer_list_shows_each_tenant_only_its_own_registration(
    world: World, variant: str
) -> None:
    pair = world.pair(variant)
    listed = {name: world.admin.issuers(world.tenants[name]) for name in ("a", "b")}
    assert listed["a"][pair.url]["kids"] == [pair.a.kid]
    if pair.variant.b == NONE:
        assert pair.url not in listed["b"]
    else:
        assert listed["b"][pair.url]["kids"] == [pair.b.kid]
    text = json.dumps(listed["b"])
    assert pair.a.tenant not in text


# -- removing or replacing one tenant's issuer leaves the other's alone -------------------------


def _remove(side: str) -> Callable[[World, Pair], None]:
    def go(world: World, pair: Pair) -> None:
        s = pair.side(side)
        world.admin.untrust(s.tenant, s.identity, "fic")
        world.admin.remove_issuer(s.tenant, pair.url)

    return go


def _replace(side: str, kid: str) -> Callable[[World, Pair], None]:
    """``side`` uploads a new JWKS (a new key under ``kid``) for the same URL."""

    def go(world: World, pair: Pair) -> None:
        s = pair.side(side)
        key = new_key()
        world.uploaded.append(key)
        world.admin.add_issuer(s.tenant, pair.url, jwks_of((key, kid)))
        pair.signers[f"{side}2"] = (key, kid)

    return go


@dataclass(frozen=True)
class Mutation:
    id: str
    variant: str
    change: Callable[[World, Pair], None]
    checks: list[tuple[str, str, int]]  # (signer, at, 200 or AADSTS code) after the change
    kids: dict[str, list[str] | None]  # issuer list kids per tenant after; None: not listed


MUTATIONS = [
    Mutation(
        "remove-a-upload-b-upload-keeps-working",
        "upload-upload-distinct-kids",
        _remove("a"),
        [
            ("b", "b", 200),
            ("a", "a", UNREGISTERED),
            ("a", "b", KID),
            ("b", "a", UNREGISTERED),
        ],
        {"a": None, "b": ["b-1"]},
    ),
    Mutation(
        "remove-a-upload-same-kid-b-upload-keeps-working",
        "upload-upload-same-kid",
        _remove("a"),
        [("b", "b", 200), ("a", "a", UNREGISTERED), ("a", "b", SIG)],
        {"a": None, "b": ["k-1"]},
    ),
    Mutation(
        "remove-a-discovery-b-upload-keeps-working",
        "discovery-then-upload-same-kid",
        _remove("a"),
        [("b", "b", 200), ("a", "a", UNREGISTERED), ("a", "b", SIG)],
        {"a": None, "b": [DISC_KID]},
    ),
    Mutation(
        "remove-b-upload-a-discovery-keeps-working",
        "discovery-then-upload-same-kid",
        _remove("b"),
        [("a", "a", 200), ("b", "b", UNREGISTERED), ("b", "a", SIG)],
        {"a": [DISC_KID], "b": None},
    ),
    Mutation(
        "replace-a-upload-same-kid-b-unchanged",
        "upload-upload-same-kid",
        _replace("a", "k-1"),
        [
            ("a2", "a", 200),
            ("a", "a", SIG),
            ("b", "b", 200),
            ("a2", "b", SIG),
            ("b", "a", SIG),
        ],
        {"a": ["k-1"], "b": ["k-1"]},
    ),
    Mutation(
        "replace-a-upload-new-kid-b-unchanged",
        "upload-upload-distinct-kids",
        _replace("a", "a-2"),
        [("a2", "a", 200), ("a", "a", KID), ("b", "b", 200), ("a2", "b", KID)],
        {"a": ["a-2"], "b": ["b-1"]},
    ),
    Mutation(
        "replace-a-upload-with-bs-kid-b-unchanged",
        "upload-upload-distinct-kids",
        _replace("a", "b-1"),
        [("a2", "a", 200), ("b", "b", 200), ("a2", "b", SIG), ("b", "a", SIG)],
        {"a": ["b-1"], "b": ["b-1"]},
    ),
    Mutation(
        "replace-b-upload-a-discovery-unchanged",
        "discovery-then-upload-same-kid",
        _replace("b", DISC_KID),
        [
            ("a", "a", 200),
            ("b2", "b", 200),
            ("b", "b", SIG),
            ("b2", "a", SIG),
            ("a", "b", SIG),
        ],
        {"a": [DISC_KID], "b": [DISC_KID]},
    ),
    Mutation(
        "replace-a-upload-b-discovery-unchanged",
        "upload-and-discovery-distinct-kids",
        _replace("a", DISC_KID),
        [("a2", "a", 200), ("b", "b", 200), ("a2", "b", SIG), ("b", "a", SIG)],
        {"a": [DISC_KID], "b": [DISC_KID]},
    ),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_changing_one_tenants_issuer_leaves_the_other_alone(
    world: World, mutation: Mutation
) -> None:
    pair = world.build(BY_ID[mutation.variant])  # a fresh URL: the change stays in this case
    # Warm every cache first: both tenants' keys have been used before the change.
    _expect(world, pair, "a", "a", 200)
    _expect(world, pair, "b", "b", 200)
    mutation.change(world, pair)
    for signer, at, expected in mutation.checks:
        _expect(world, pair, signer, at, expected)
    for name, kids in mutation.kids.items():
        listed = world.admin.issuers(world.tenants[name])
        if kids is None:
            assert pair.url not in listed
        else:
            assert listed[pair.url]["kids"] == kids


# -- access tokens and vaults ------------------------------------------------------------------


def _access_token(world: World, pair: Pair, side: str) -> str:
    response = world.exchange(side, pair.side(side).client_id, pair.token(side))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _read_crown(world: World, vault: str, token: str, by: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"}
    http = world.http
    if by == "host":
        headers["host"] = f"{vault}.vault.localhost:{world.server.port}"
        return http.get("/secrets/crown?api-version=7.4", headers=headers)
    return http.get(f"/vaults/{vault}/secrets/crown?api-version=7.4", headers=headers)


VAULT_CROSSINGS = [
    (variant, direction, by)
    for variant in ("upload-upload-same-kid", "discovery-then-upload-same-kid", "upload-only-in-a")
    for direction in ("a-token-on-b-vault", "b-token-on-a-vault")
    for by in ("path", "host")
    if not (variant == "upload-only-in-a" and direction == "b-token-on-a-vault")
]


@pytest.mark.parametrize(
    ("variant", "direction", "by"), VAULT_CROSSINGS, ids=["-".join(c) for c in VAULT_CROSSINGS]
)
def test_access_token_of_one_tenant_is_refused_by_the_others_vault(
    world: World, variant: str, direction: str, by: str
) -> None:
    pair = world.pair(variant)
    mine, theirs = ("a", "b") if direction == "a-token-on-b-vault" else ("b", "a")
    token = _access_token(world, pair, mine)
    own = _read_crown(world, world.vaults[mine], token, by)
    assert own.status_code == 200 and own.json()["value"] == world.crowns[mine], own.text
    other = _read_crown(world, world.vaults[theirs], token, by)
    count("isolation")
    assert other.status_code == 401, other.text
    assert other.json()["error"]["code"] == "Unauthorized"
    assert world.crowns[theirs] not in other.text
    # The challenge names the vault's own tenant, never the caller's.
    challenge = other.headers["www-authenticate"]
    assert world.tenants[theirs] in challenge and world.tenants[mine] not in challenge


def test_vault_wide_role_in_one_tenant_does_not_reach_the_other(world: World) -> None:
    """Even ``secrets-officer`` on every vault (scope ``/``) of A is nothing in B."""
    pair = world.build(BY_ID["upload-upload-same-kid"])
    world.admin.assign(world.tenants["a"], pair.a.identity, "secrets-officer", "/")
    token = _access_token(world, pair, "a")
    headers = {"authorization": f"Bearer {token}"}
    http = world.http
    for method, path, body in (
        ("GET", "secrets/crown", None),
        ("PUT", "secrets/crown", {"value": "overwritten-by-a"}),
        ("GET", "secrets", None),
        ("DELETE", "secrets/crown", None),
    ):
        url = f"/vaults/{world.vaults['b']}/{path}?api-version=7.4"
        response = http.request(method, url, headers=headers, json=body)
        count("isolation")
        assert response.status_code == 401, (method, path, response.text)
    own = http.get(f"/vaults/{world.vaults['a']}/secrets?api-version=7.4", headers=headers)
    assert own.status_code == 200, own.text
    b = world.pair("upload-upload-same-kid")
    check = _read_crown(world, world.vaults["b"], _access_token(world, b, "b"), "path")
    assert check.json()["value"] == world.crowns["b"]


# -- each tenant's JWKS lists its own signing keys only ----------------------------------------


def _material(jwk: dict[str, Any]) -> str:
    return str(jwk.get("n") or f"{jwk.get('x')}.{jwk.get('y')}")


def _uploaded_material(world: World) -> set[str]:
    return {_material(k) for k in jwks_of(*((key, "x") for key in world.uploaded))["keys"]}


@pytest.mark.parametrize("stage", ["as-created", "after-rotating-a", "after-rotating-b"])
def test_discovery_jwks_never_lists_the_other_tenants_keys(world: World, stage: str) -> None:
    if stage != "as-created":
        world.admin.rotate_keys(world.tenants[stage[-1]])
    pair = world.pair("upload-upload-same-kid")
    tokens = {side: _access_token(world, pair, side) for side in ("a", "b")}
    http = world.http
    jwks = {
        side: http.get(f"/{world.tenants[side]}/discovery/v2.0/keys").json()["keys"]
        for side in ("a", "b")
    }
    for side in ("a", "b"):
        config = http.get(f"/{world.tenants[side]}/v2.0/.well-known/openid-configuration")
        assert config.status_code == 200, config.text
        other = world.tenants["b" if side == "a" else "a"]
        assert world.tenants[side] in config.json()["jwks_uri"]
        assert other not in config.text
    kids = {side: {k["kid"] for k in keys} for side, keys in jwks.items()}
    material = {side: {_material(k) for k in keys} for side, keys in jwks.items()}
    assert kids["a"] and kids["b"]
    assert not kids["a"] & kids["b"], "a kid is published by both tenants"
    assert not material["a"] & material["b"], "a public key is published by both tenants"
    assert not (material["a"] | material["b"]) & _uploaded_material(world), (
        "an uploaded issuer key is published as a keyless signing key"
    )
    for mine, theirs in (("a", "b"), ("b", "a")):
        count("isolation")
        kid = jwt.get_unverified_header(tokens[mine])["kid"]
        assert kid in kids[mine] and kid not in kids[theirs]
        # The other tenant's keys do not verify it, whatever kid they are tried under.
        for jwk in jwks[theirs]:
            key = jwt.PyJWK.from_dict(jwk)
            with pytest.raises(jwt.InvalidSignatureError):
                jwt.decode(
                    tokens[mine],
                    key.key,
                    algorithms=[jwk["alg"]],
                    options={"verify_aud": False, "verify_iss": False},
                )
        # ... and its own JWKS does (the assertion above is not vacuous).
        own = next(k for k in jwks[mine] if k["kid"] == kid)
        claims = jwt.decode(
            tokens[mine],
            jwt.PyJWK.from_dict(own).key,
            algorithms=[own["alg"]],
            options={"verify_aud": False},
        )
        assert claims["tid"] == world.tenants[mine]


def test_server_survived(world: World) -> None:
    assert world.server.proc.poll() is None
    assert "Traceback" not in world.server.log, world.server.log
