"""Cross-tenant isolation of trusted issuers, against keyless in process.

Two tenants register the *same* issuer URL, each with its own keys: by uploaded JWKS in both
(distinct kids, or the same kid over different keys), by discovery in one and upload in the
other (in either order), or in one tenant only. Both tenants have an identity trusting that
URL for the same subject. A token signed with one tenant's key must be accepted there and
refused by the other tenant with the exact AADSTS code; removing or replacing one tenant's
issuer must leave the other's untouched; an access token of one tenant must be refused by the
other's vaults; and one tenant's discovery JWKS must never list the other's keys.

``core/federation.py`` ``_cache_id`` is what this guards: an uploaded JWKS is cached under
``upload:TENANT:URL``, a discovered one under its URL.

In process (tests/support/inprocess.py, ``--dev``), with keyless's clock standing still: every
workload token is issued at the clock's now. The discovery issuers are real plain-http servers
on loopback (tests/support/oidc.py), reached through the production fetcher's guarded network
path, which ``--dev`` opens to loopback. ``test_server_survived`` checks that nothing was logged
as an error (a crash in the app fails its case: ASGITransport raises the app's exceptions).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.clock import ManualClock
from tests.hardening.tally import count
from tests.support.inprocess import ErrorLog, InProcess, in_process
from tests.support.oidc import SUBJECT, LocalIssuer, jwks_of, new_key, sign
from tests.support.tenants import token_form

pytestmark = pytest.mark.asyncio(loop_scope="module")

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
NOW = int(time.time())  # keyless's clock stands here for the whole module (``world``)


class Admin:
    """``tests/support/tenants.Admin`` in process: the same admin API calls, awaited."""

    def __init__(self, kl: InProcess) -> None:
        self.kl = kl

    async def call(self, method: str, path: str, *, tenant: str, body: Any = None) -> Any:
        return await self.kl.call(method, path, body, tenant=tenant)

    async def create_tenant(self, alias: str) -> str:
        """What ``keyless tenant create ALIAS`` sends; returns the tenant id."""
        return str((await self.kl.call("POST", "/v1/tenants", {"alias": alias}))["id"])

    async def add_issuer(self, tenant: str, url: str, jwks: dict[str, Any] | None = None) -> Any:
        """Trust ``url`` in ``tenant``: by discovery, or (again: replace) with an uploaded JWKS."""
        body: dict[str, Any] = {"url": url}
        if jwks is not None:
            body["jwks"] = jwks
        return await self.call("POST", "/v1/issuers", tenant=tenant, body=body)

    async def issuers(self, tenant: str) -> dict[str, Any]:
        """The tenant's issuers by URL, each with the kids keyless holds for it."""
        return {i["url"]: i for i in await self.call("GET", "/v1/issuers", tenant=tenant)}

    async def remove_issuer(self, tenant: str, url: str) -> None:
        await self.call("POST", "/v1/issuers/remove", tenant=tenant, body={"url": url})

    async def create_identity(self, tenant: str, name: str) -> dict[str, str]:
        return dict(await self.call("POST", "/v1/identities", tenant=tenant, body={"name": name}))

    async def trust(self, tenant: str, identity: str, credential: str, issuer: str) -> None:
        body = {"name": credential, "issuer": issuer, "subject": SUBJECT}
        path = f"/v1/identities/{identity}/federated-credentials"
        await self.call("POST", path, tenant=tenant, body=body)

    async def untrust(self, tenant: str, identity: str, credential: str) -> None:
        path = f"/v1/identities/{identity}/federated-credentials/{credential}"
        await self.call("DELETE", path, tenant=tenant)

    async def create_vault(self, tenant: str, name: str) -> None:
        await self.call("POST", "/v1/vaults", tenant=tenant, body={"name": name})

    async def set_secret(self, tenant: str, vault: str, name: str, value: str) -> None:
        path = f"/v1/vaults/{vault}/secrets/{name}"
        await self.call("PUT", path, tenant=tenant, body={"value": value})

    async def assign(self, tenant: str, identity: str, role: str, scope: str) -> None:
        body = {"identity": identity, "role": role, "scope": scope}
        await self.call("POST", "/v1/roles", tenant=tenant, body=body)

    async def rotate_keys(self, tenant: str) -> None:
        await self.call("POST", f"/v1/tenants/{tenant}/keys/rotate", tenant=tenant)


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
    clock: ManualClock
    signers: dict[str, tuple[rsa.RSAPrivateKey, str]] = field(default_factory=dict)

    def token(self, signer: str, **claims: Any) -> str:
        """``signer``'s workload token, issued at keyless's now."""
        key, kid = self.signers[signer]
        now = int(self.clock.now())
        times = {"iat": now, "nbf": now, "exp": now + 600}
        return sign(key, iss=self.url, kid=kid, **{**times, **claims})

    def side(self, name: str) -> Side:
        return self.a if name == "a" else self.b


@dataclass
class World:
    kl: InProcess
    admin: Admin
    tenants: dict[str, str]  # "a"/"b" -> tenant id
    vaults: dict[str, str]  # "a"/"b" -> vault name
    crowns: dict[str, str]  # "a"/"b" -> the value of the secret in that tenant's vault
    issuers: list[LocalIssuer] = field(default_factory=list)
    uploaded: list[rsa.RSAPrivateKey] = field(default_factory=list)
    pairs: dict[str, Pair] = field(default_factory=dict)
    serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def http(self) -> httpx.AsyncClient:
        """The public app's client, at the public URL."""
        return self.kl.public

    @property
    def scope(self) -> str:
        return f"https://vault.localhost:{self.kl.settings.public_port}/.default"

    async def exchange(self, at: str, client_id: str, assertion: str) -> httpx.Response:
        form = token_form(client_id, assertion, self.scope)
        return await self.http.post(f"/{self.tenants[at]}/oauth2/v2.0/token", data=form)

    async def build(self, variant: Variant) -> Pair:
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
            client_id = (await self.admin.create_identity(tenant, identity))["client_id"]
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
                await self.admin.add_issuer(side.tenant, url, jwks_of((side.key, side.kid)))
            else:
                await self.admin.add_issuer(side.tenant, url)
            await self.admin.trust(side.tenant, side.identity, "fic", url)
        for name, side in sides.items():
            await self.admin.assign(
                side.tenant, side.identity, "secrets-user", f"/vaults/{self.vaults[name]}"
            )
        pair = Pair(variant, url, sides["a"], sides["b"], self.kl.clock)
        pair.signers = {"a": (pair.a.key, pair.a.kid), "b": (pair.b.key, pair.b.kid)}
        return pair

    async def pair(self, variant_id: str) -> Pair:
        if variant_id not in self.pairs:
            self.pairs[variant_id] = await self.build(BY_ID[variant_id])
        return self.pairs[variant_id]


ERRORS = ErrorLog()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("isolation")
    logger = logging.getLogger("keyless")
    logger.addHandler(ERRORS)
    w: World | None = None
    try:
        # --dev: the discovery issuers are plain http on loopback. RS256: keyless's own keys
        # are of the same kind as the uploaded ones, so "never published" is not trivially true.
        # No token rate limit: the subprocess refilled its bucket in real time; here time stands.
        # The clock stands at the module's start (real time): the JWKS test checks keyless's
        # access tokens with PyJWT, which judges their time claims by the wall clock.
        clock = ManualClock(NOW)
        flags = {"dev": True, "token_rate_limit": 0, "signing_alg": "RS256"}
        async with in_process(tmp, clock, **flags) as kl:
            admin = Admin(kl)
            tenants = {
                "a": await admin.create_tenant("iso-a"),
                "b": await admin.create_tenant("iso-b"),
            }
            assert tenants["a"] != tenants["b"]
            vaults = {"a": "iso-a-vault", "b": "iso-b-vault"}
            crowns = {"a": "tenant-a-crown-17", "b": "tenant-b-crown-29"}
            for name, tenant in tenants.items():
                await admin.create_vault(tenant, vaults[name])
                await admin.set_secret(tenant, vaults[name], "crown", crowns[name])
            w = World(kl, admin, tenants, vaults, crowns)
            yield w
    finally:
        if w:
            # Each close waits for its server's poll (0.5 s): all at once, not one after another.
            await asyncio.gather(*(asyncio.to_thread(issuer.close) for issuer in w.issuers))
        logger.removeHandler(ERRORS)


def _assert_refused(response: httpx.Response, code: int) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert "access_token" not in body, body
    assert (body["error"], body["error_codes"]) == ("invalid_client", [code]), body[
        "error_description"
    ]
    assert body["error_description"].startswith(f"AADSTS{code}: ")


async def _expect(world: World, pair: Pair, signer: str, at: str, expected: int) -> None:
    """``signer``'s token, presented by ``at``'s identity at ``at``'s token endpoint."""
    response = await world.exchange(at, pair.side(at).client_id, pair.token(signer))
    count("isolation")
    if expected == 200:
        assert response.status_code == 200, f"{signer}@{at}: {response.text}"
        assert response.json()["access_token"]
    else:
        _assert_refused(response, expected)


# -- tokens at the token endpoint --------------------------------------------------------------


@pytest.mark.parametrize("variant", [v.id for v in VARIANTS])
async def test_each_tenant_accepts_tokens_signed_with_its_own_key(
    world: World, variant: str
) -> None:
    """The control: the refusals below are about the other tenant, not a broken setup."""
    pair = await world.pair(variant)
    await _expect(world, pair, "a", "a", 200)
    if pair.variant.b != NONE:
        await _expect(world, pair, "b", "b", 200)


CROSSINGS = [
    (v.id, direction)
    for v in VARIANTS
    for direction in ("a-token-at-b", "b-token-at-a")
    if direction == "a-token-at-b" or v.b_at_a is not None
]


@pytest.mark.parametrize(
    ("variant", "direction"), CROSSINGS, ids=[f"{v}:{d}" for v, d in CROSSINGS]
)
async def test_token_signed_with_one_tenants_key_is_refused_by_the_other(
    world: World, variant: str, direction: str
) -> None:
    pair = await world.pair(variant)
    signer, at = ("a", "b") if direction == "a-token-at-b" else ("b", "a")
    code = pair.variant.a_at_b if signer == "a" else pair.variant.b_at_a
    assert code is not None
    await _expect(world, pair, signer, at, code)
    # Same again after the other tenant's own token was accepted (its keys are now warm).
    if pair.variant.b != NONE or at == "a":
        await _expect(world, pair, at, at, 200)
    await _expect(world, pair, signer, at, code)


@pytest.mark.parametrize("variant", [v.id for v in VARIANTS])
async def test_issuer_list_shows_each_tenant_only_its_own_registration(
    world: World, variant: str
) -> None:
    pair = await world.pair(variant)
    listed = {name: await world.admin.issuers(world.tenants[name]) for name in ("a", "b")}
    assert listed["a"][pair.url]["kids"] == [pair.a.kid]
    if pair.variant.b == NONE:
        assert pair.url not in listed["b"]
    else:
        assert listed["b"][pair.url]["kids"] == [pair.b.kid]
    text = json.dumps(listed["b"])
    assert pair.a.tenant not in text


# -- removing or replacing one tenant's issuer leaves the other's alone -------------------------


def _remove(side: str) -> Callable[[World, Pair], Awaitable[None]]:
    async def go(world: World, pair: Pair) -> None:
        s = pair.side(side)
        await world.admin.untrust(s.tenant, s.identity, "fic")
        await world.admin.remove_issuer(s.tenant, pair.url)

    return go


def _replace(side: str, kid: str) -> Callable[[World, Pair], Awaitable[None]]:
    """``side`` uploads a new JWKS (a new key under ``kid``) for the same URL."""

    async def go(world: World, pair: Pair) -> None:
        s = pair.side(side)
        key = new_key()
        world.uploaded.append(key)
        await world.admin.add_issuer(s.tenant, pair.url, jwks_of((key, kid)))
        pair.signers[f"{side}2"] = (key, kid)

    return go


@dataclass(frozen=True)
class Mutation:
    id: str
    variant: str
    change: Callable[[World, Pair], Awaitable[None]]
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
async def test_changing_one_tenants_issuer_leaves_the_other_alone(
    world: World, mutation: Mutation
) -> None:
    pair = await world.build(BY_ID[mutation.variant])  # a fresh URL: the change stays in this case
    # Warm every cache first: both tenants' keys have been used before the change.
    await _expect(world, pair, "a", "a", 200)
    await _expect(world, pair, "b", "b", 200)
    await mutation.change(world, pair)
    for signer, at, expected in mutation.checks:
        await _expect(world, pair, signer, at, expected)
    for name, kids in mutation.kids.items():
        listed = await world.admin.issuers(world.tenants[name])
        if kids is None:
            assert pair.url not in listed
        else:
            assert listed[pair.url]["kids"] == kids


# -- access tokens and vaults ------------------------------------------------------------------


async def _access_token(world: World, pair: Pair, side: str) -> str:
    response = await world.exchange(side, pair.side(side).client_id, pair.token(side))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def _read_crown(world: World, vault: str, token: str, by: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"}
    http = world.http
    if by == "host":
        headers["host"] = f"{vault}.vault.localhost:{world.kl.settings.public_port}"
        return await http.get("/secrets/crown?api-version=7.4", headers=headers)
    return await http.get(f"/vaults/{vault}/secrets/crown?api-version=7.4", headers=headers)


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
async def test_access_token_of_one_tenant_is_refused_by_the_others_vault(
    world: World, variant: str, direction: str, by: str
) -> None:
    pair = await world.pair(variant)
    mine, theirs = ("a", "b") if direction == "a-token-on-b-vault" else ("b", "a")
    token = await _access_token(world, pair, mine)
    own = await _read_crown(world, world.vaults[mine], token, by)
    assert own.status_code == 200 and own.json()["value"] == world.crowns[mine], own.text
    other = await _read_crown(world, world.vaults[theirs], token, by)
    count("isolation")
    assert other.status_code == 401, other.text
    assert other.json()["error"]["code"] == "Unauthorized"
    assert world.crowns[theirs] not in other.text
    # To a client that is no Azure SDK the challenge names the vault's tenant, as Entra does
    # (api/tenancy.py), never the caller's.
    challenge = other.headers["www-authenticate"]
    assert world.tenants[mine] not in challenge
    assert challenge.startswith(f'Bearer authorization="{world.kl.url}/{world.tenants[theirs]}", ')


async def test_vault_wide_role_in_one_tenant_does_not_reach_the_other(world: World) -> None:
    """Even ``secrets-officer`` on every vault (scope ``/``) of A is nothing in B."""
    pair = await world.build(BY_ID["upload-upload-same-kid"])
    await world.admin.assign(world.tenants["a"], pair.a.identity, "secrets-officer", "/")
    token = await _access_token(world, pair, "a")
    headers = {"authorization": f"Bearer {token}"}
    http = world.http
    for method, path, body in (
        ("GET", "secrets/crown", None),
        ("PUT", "secrets/crown", {"value": "overwritten-by-a"}),
        ("GET", "secrets", None),
        ("DELETE", "secrets/crown", None),
    ):
        url = f"/vaults/{world.vaults['b']}/{path}?api-version=7.4"
        response = await http.request(method, url, headers=headers, json=body)
        count("isolation")
        assert response.status_code == 401, (method, path, response.text)
    own = await http.get(f"/vaults/{world.vaults['a']}/secrets?api-version=7.4", headers=headers)
    assert own.status_code == 200, own.text
    b = await world.pair("upload-upload-same-kid")
    check = await _read_crown(world, world.vaults["b"], await _access_token(world, b, "b"), "path")
    assert check.json()["value"] == world.crowns["b"]


# -- each tenant's JWKS lists its own signing keys only ----------------------------------------


def _material(jwk: dict[str, Any]) -> str:
    return str(jwk.get("n") or f"{jwk.get('x')}.{jwk.get('y')}")


def _uploaded_material(world: World) -> set[str]:
    return {_material(k) for k in jwks_of(*((key, "x") for key in world.uploaded))["keys"]}


@pytest.mark.parametrize("stage", ["as-created", "after-rotating-a", "after-rotating-b"])
async def test_discovery_jwks_never_lists_the_other_tenants_keys(world: World, stage: str) -> None:
    if stage != "as-created":
        await world.admin.rotate_keys(world.tenants[stage[-1]])
    pair = await world.pair("upload-upload-same-kid")
    tokens = {side: await _access_token(world, pair, side) for side in ("a", "b")}
    http = world.http
    jwks = {
        side: (await http.get(f"/{world.tenants[side]}/discovery/v2.0/keys")).json()["keys"]
        for side in ("a", "b")
    }
    for side in ("a", "b"):
        config = await http.get(f"/{world.tenants[side]}/v2.0/.well-known/openid-configuration")
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


async def test_server_survived(world: World) -> None:
    assert (await world.http.get("/healthz")).status_code == 200
    assert [r.getMessage() for r in ERRORS.records] == []
