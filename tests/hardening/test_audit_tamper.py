"""Forging the audit history, on keyless and a real database (SQLite and PostgreSQL).

A writer to the database (no root key) edits, inserts, deletes, swaps and re-chains rows,
recomputing every SHA-256 hash and the head as it goes, moves the head back, plants or edits
checkpoints, rolls the whole log back to an older state. A holder of the root key rewrites
history with valid MACs. Each forgery must be named by ``POST /v1/audit/verify`` (what
``keyless audit verify`` prints): the check, the kind, the seq. What only an export kept
elsewhere can show (a rollback with the checkpoints deleted, a rewrite by a root-key holder)
must be shown by ``--checkpoint EXPORT``, and must pass without it: that is the limit of what
the database alone can prove.

Also: a log written before the audit key existed (migrated from 0004) verifies with its
unkeyed prefix reported and a checkpoint over it; a root key rotation keeps everything green;
a deleted audit key row shows up after a restart.

The forgeries run in process (tests/support/inprocess.py: the server's own ``Services`` and
admin app on the same database), the exports made with the admin calls ``keyless audit export``
makes. Real servers and the real CLI where a restart or the CLI's own output is what is tested.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from keyless import rootkey
from keyless.core import jose
from keyless.core.audit import AuditEvent
from keyless.core.auditchain import GENESIS, AuditRow, seal, workload_json
from keyless.core.auditcheckpoint import TYP, jwk_text
from keyless.core.auditkey import AuditKey, AuditMac
from keyless.store.schema import audit_checkpoints, audit_events, audit_head, audit_key
from keyless.store.urls import DatabaseUrl
from tests.hardening.tally import count
from tests.support.inprocess import InProcess, in_process
from tests.support.server import RunningServer, ServerFactory

FIRST, SECOND = 12, 6  # events before the first export, and between the two exports
PAGE = 1000  # the CLI's page size (keyless.cli.audit.PAGE)
# The in-process cases share the module's event loop with its module-scoped keyless.
in_proc = pytest.mark.asyncio(loop_scope="module")


class Db:
    """The database, written to directly: what an attacker with write access does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(
            DatabaseUrl(url).sync_url, poolclass=sa.pool.NullPool, connect_args=_connect_args(url)
        )

    def rows(self) -> list[AuditRow]:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(audit_events).order_by(audit_events.c.seq)).all()
        return [
            AuditRow(
                r.seq,
                r.prev_hash,
                r.hash,
                AuditEvent(
                    r.time,
                    r.request_id,
                    r.tenant_id,
                    r.action,
                    r.target,
                    r.result,
                    r.reason,
                    r.actor,
                    json.loads(r.workload),
                ),
                r.mac,
            )
            for r in found
        ]

    def head(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(audit_head)).one()._mapping)

    def write(self, rows: list[AuditRow]) -> None:
        """Replace these rows (by seq), inserting the ones that are not there."""
        with self.engine.begin() as conn:
            for row in rows:
                conn.execute(audit_events.delete().where(audit_events.c.seq == row.seq))
                conn.execute(audit_events.insert().values(**_values(row)))

    def move_head(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(audit_head.update().values(**values))

    def sql(self, statement: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(statement)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        with self.engine.connect() as conn:
            return {
                t.name: [dict(r._mapping) for r in conn.execute(sa.select(t)).all()]
                for t in (audit_events, audit_head, audit_checkpoints, audit_key)
            }

    def restore(self, snapshot: dict[str, list[dict[str, Any]]]) -> None:
        with self.engine.begin() as conn:
            for t in (audit_events, audit_head, audit_checkpoints, audit_key):
                conn.execute(t.delete())
                if snapshot[t.name]:
                    conn.execute(t.insert(), snapshot[t.name])

    def close(self) -> None:
        self.engine.dispose()


def _connect_args(url: str) -> dict[str, Any]:
    return {"timeout": 30} if DatabaseUrl(url).is_sqlite else {}


def _values(row: AuditRow) -> dict[str, Any]:
    e = row.event
    return {
        "seq": row.seq,
        "time": e.time,
        "request_id": e.request_id,
        "tenant_id": e.tenant_id,
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "result": e.result,
        "reason": e.reason,
        "workload": workload_json(e.workload),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
        "mac": row.mac,
    }


def _rechain(
    rows: list[AuditRow],
    edit: Callable[[AuditRow], AuditEvent],
    macs: Callable[[int, str], str | None],
) -> list[AuditRow]:
    """Rows with ``edit`` applied and every hash recomputed; ``macs(seq, hash)`` gives the MAC
    the forger can write (None, an old one, or a valid one with the key)."""
    out: list[AuditRow] = []
    prev = GENESIS
    for row in rows:
        new = seal(prev, row.seq, edit(row))
        out.append(dataclasses.replace(new, mac=macs(row.seq, new.hash)))
        prev = new.hash
    return out


def _forge_reason(at: int) -> Callable[[AuditRow], AuditEvent]:
    def edit(row: AuditRow) -> AuditEvent:
        if row.seq != at:
            return row.event
        return dataclasses.replace(row.event, result="failure", reason="nothing happened here")

    return edit


@dataclass
class Live:
    data_dir: Path  # the server's (its root key)
    db: Db
    e1: Path  # export with a checkpoint at seq FIRST
    e2: Path  # export with checkpoints at FIRST and E2_SEQ
    old_head: dict[str, Any]  # the head row as it was at seq FIRST (a backup, a prior read)
    snapshot: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def e2_seq(self) -> int:
        return FIRST + 1 + SECOND  # the first export is itself an event

    @property
    def last(self) -> int:
        return self.e2_seq + 1

    def audit_key(self) -> AuditKey:
        """What a holder of the root key (and the database) can read."""
        root = rootkey.load_root_keys(self.data_dir / "root.key", create=False)
        with self.db.engine.connect() as conn:
            sealed = conn.execute(sa.select(audit_key.c.sealed)).scalar_one()
        return AuditKey.open(bytes(sealed), root)


def _create_identities(server: RunningServer, names: list[str]) -> None:
    with server.admin() as admin:
        for name in names:
            response = admin.post("/v1/identities?tenant=default", json={"name": name})
            assert response.status_code in (200, 201), response.text


def _exported_checkpoints(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line["checkpoint"] for line in lines if "checkpoint" in line]


def _verify(server: RunningServer, against: Path | None = None) -> dict[str, Any]:
    body = {"checkpoints": _exported_checkpoints(against)} if against else None
    with server.admin() as admin:
        response = admin.post("/v1/audit/verify", json=body)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def _setup(server: RunningServer, db: Db, tmp: Path) -> Live:
    _create_identities(server, [f"before-{i}" for i in range(FIRST)])
    old_head = db.head()
    assert old_head["seq"] == FIRST and old_head["mac"]
    e1, e2 = tmp / "e1.jsonl", tmp / "e2.jsonl"
    server.cli("audit", "export", "--file", str(e1))
    _create_identities(server, [f"between-{i}" for i in range(SECOND)])
    server.cli("audit", "export", "--file", str(e2))
    live = Live(server.data_dir, db, e1, e2, old_head)
    assert [c["seq"] for c in _exported_checkpoints(e2)] == [FIRST, live.e2_seq]
    live.snapshot = db.snapshot()
    return live


# -- in process: the same, through the admin app ---------------------------------------------


async def _create_identities_in(kl: InProcess, names: list[str]) -> None:
    for name in names:
        response = await kl.admin.post("/v1/identities?tenant=default", json={"name": name})
        assert response.status_code in (200, 201), response.text


async def _verify_in(kl: InProcess, against: Path | None = None) -> dict[str, Any]:
    body = {"checkpoints": _exported_checkpoints(against)} if against else None
    response = await kl.admin.post("/v1/audit/verify", json=body)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


async def _get(kl: InProcess, path: str, **params: int) -> dict[str, Any]:
    response = await kl.admin.get(path, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def _export_in(kl: InProcess, file: Path) -> None:
    """``keyless audit export --file FILE``: the admin calls it makes, the lines it writes."""
    response = await kl.admin.post("/v1/audit/checkpoints")
    assert response.status_code == 200, response.text
    fresh = response.json()["checkpoint"]
    upto = int(fresh["seq"]) if fresh else 0
    lines: list[dict[str, Any]] = []
    after = 0
    while upto:
        events = (await _get(kl, "/v1/audit", after=after, limit=PAGE))["events"]
        lines += [e for e in events if int(e["seq"]) <= upto]
        if not events or int(events[-1]["seq"]) >= upto or len(events) < PAGE:
            break
        after = int(events[-1]["seq"])
    cursor = 0
    while True:
        page = await _get(kl, "/v1/audit/checkpoints", after=cursor, limit=PAGE, upto=upto)
        lines += [{"checkpoint": cp} for cp in page["checkpoints"]]
        cursor = int(page["next"])
        if len(page["checkpoints"]) < PAGE:
            break
    file.write_text(
        "".join(json.dumps(x, sort_keys=True, separators=(",", ":")) + "\n" for x in lines)
    )


async def _setup_in(kl: InProcess, db: Db, tmp: Path) -> Live:
    await _create_identities_in(kl, [f"before-{i}" for i in range(FIRST)])
    old_head = db.head()
    assert old_head["seq"] == FIRST and old_head["mac"]
    e1, e2 = tmp / "e1.jsonl", tmp / "e2.jsonl"
    await _export_in(kl, e1)
    await _create_identities_in(kl, [f"between-{i}" for i in range(SECOND)])
    await _export_in(kl, e2)
    live = Live(kl.data_dir, db, e1, e2, old_head)
    assert [c["seq"] for c in _exported_checkpoints(e2)] == [FIRST, live.e2_seq]
    live.snapshot = db.snapshot()
    return live


@dataclass
class InLive:
    kl: InProcess
    live: Live


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def _inproc(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InLive]:
    tmp = tmp_path_factory.mktemp(f"tamper-{request.param}")
    flags: dict[str, str] = {}
    pg_name = None
    if request.param == "postgresql":
        admin_url = request.getfixturevalue("pg_server")
        pg_name = f"keyless_test_{secrets.token_hex(6)}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = f"{admin_url.rsplit('/', 1)[0]}/{pg_name}"
        flags = {"database_url": url}
    else:
        url = f"sqlite:///{tmp / 'data' / 'keyless.db'}"
    db = None
    try:
        async with in_process(tmp, dev=True, **flags) as kl:
            db = Db(url)
            yield InLive(kl, await _setup_in(kl, db, tmp))
    finally:
        if db is not None:
            db.close()
        if pg_name is not None:
            with psycopg.connect(request.getfixturevalue("pg_server"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


@pytest.fixture
def inproc(_inproc: InLive) -> Iterator[InLive]:
    """The module's keyless in process, its audit tables put back as they were after each test."""
    yield _inproc
    _inproc.live.db.restore(_inproc.live.snapshot)


@pytest.fixture(scope="module")
def _cli_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Live]]:
    """A real server (SQLite) for what the CLI itself prints; the checks behind its words run
    in process on both databases."""
    tmp = tmp_path_factory.mktemp("tamper-cli")
    factory = ServerFactory(tmp)
    db = None
    try:
        server = factory.start(dev=True, data_dir=tmp / "data")
        db = Db(f"sqlite:///{tmp / 'data' / 'keyless.db'}")
        yield server, _setup(server, db, tmp)
    finally:
        factory.stop_all()
        if db is not None:
            db.close()


@pytest.fixture
def cli_live(_cli_live: tuple[RunningServer, Live]) -> Iterator[tuple[RunningServer, Live]]:
    yield _cli_live
    _cli_live[1].db.restore(_cli_live[1].snapshot)


# -- the forgeries -------------------------------------------------------------------------


def _reason_edited_and_rechained(live: Live) -> None:
    """Edit an event and recompute every later hash and the head: passed before MACs."""
    old = {r.seq: r.mac for r in live.db.rows()}
    rows = _rechain(live.db.rows(), _forge_reason(5), lambda seq, _h: old[seq])
    live.db.write(rows)
    live.db.move_head(hash=rows[-1].hash)


def _reason_edited_rechained_macs_nulled(live: Live) -> None:
    rows = _rechain(live.db.rows(), _forge_reason(5), lambda _seq, _h: None)
    live.db.write(rows[4:])  # seqs 5 on
    live.db.move_head(hash=rows[-1].hash)


def _reason_edited_only(live: Live) -> None:
    live.db.sql(audit_events.update().where(audit_events.c.seq == 5).values(reason="x"))


def _appended(mac: str | None, move_head: bool) -> Callable[[Live], None]:
    def tamper(live: Live) -> None:
        last = live.db.rows()[-1]
        event = dataclasses.replace(last.event, action="secret.get", reason="")
        row = dataclasses.replace(seal(last.hash, last.seq + 1, event), mac=mac)
        live.db.write([row])
        if move_head:
            live.db.move_head(seq=row.seq, hash=row.hash)

    return tamper


def _last_rows_deleted(keep_mac: bool) -> Callable[[Live], None]:
    def tamper(live: Live) -> None:
        rows = live.db.rows()
        keep = rows[: len(rows) - 3]
        live.db.sql(audit_events.delete().where(audit_events.c.seq > keep[-1].seq))
        values: dict[str, Any] = {"seq": keep[-1].seq, "hash": keep[-1].hash}
        if not keep_mac:
            values["mac"] = None
        live.db.move_head(**values)

    return tamper


def _rows_swapped(live: Live) -> None:
    rows = {r.seq: r for r in live.db.rows()}
    a, b = rows[6], rows[9]
    live.db.write([dataclasses.replace(b, seq=6), dataclasses.replace(a, seq=9)])


def _mac_nulled(live: Live) -> None:
    live.db.sql(audit_events.update().where(audit_events.c.seq == 7).values(mac=None))


def _mac_copied(live: Live) -> None:
    rows = {r.seq: r for r in live.db.rows()}
    live.db.sql(audit_events.update().where(audit_events.c.seq == 7).values(mac=rows[8].mac))


def _checkpoint_hash_edited(live: Live) -> None:
    rows = {r.seq: r for r in live.db.rows()}
    c = audit_checkpoints.c
    live.db.sql(audit_checkpoints.update().where(c.seq == FIRST).values(hash=rows[3].hash))


def _checkpoint_self_signed(live: Live) -> None:
    """A checkpoint of a forged state, signed with a key of the forger's own."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = jose.public_jwk(key.public_key(), "forger", "ES256")
    claims = {"typ": TYP, "iss": "x", "seq": FIRST, "hash": "f" * 64, "time": 1.0}
    jws = jose.sign_compact({"alg": "ES256", "kid": "forger"}, claims, key)
    c = audit_checkpoints.c
    live.db.sql(
        audit_checkpoints.update()
        .where(c.seq == FIRST)
        .values(hash="f" * 64, time=1.0, kid="forger", jws=jws, jwk=jwk_text(jwk), mac="0" * 64)
    )


def _rolled_back(delete_checkpoints: bool) -> Callable[[Live], None]:
    """The log cut back to seq FIRST and the head row restored as it was then, MAC and all."""

    def tamper(live: Live) -> None:
        live.db.sql(audit_events.delete().where(audit_events.c.seq > FIRST))
        live.db.move_head(**{k: v for k, v in live.old_head.items() if k != "id"})
        if delete_checkpoints:
            live.db.sql(audit_checkpoints.delete().where(audit_checkpoints.c.seq > FIRST))

    return tamper


def _rewritten_with_the_root_key(delete_checkpoints: bool) -> Callable[[Live], None]:
    """The root key opens the audit key: every MAC and the head's are valid again."""

    def tamper(live: Live) -> None:
        macs: AuditMac = live.audit_key().macs()
        rows = _rechain(live.db.rows(), _forge_reason(5), macs.row)
        live.db.write(rows)
        live.db.move_head(hash=rows[-1].hash, mac=macs.head(rows[-1].seq, rows[-1].hash))
        if delete_checkpoints:
            live.db.sql(audit_checkpoints.delete())

    return tamper


@dataclass(frozen=True)
class Case:
    tamper: Callable[[Live], None]
    check: str
    kind: str
    seq: Callable[[Live], int]
    against: str | None = None  # "e1" | "e2": only an export shows it (and verify alone passes)


def _at(seq: int) -> Callable[[Live], int]:
    return lambda _live: seq


CASES = {
    "edited-rechained-old-macs": Case(_reason_edited_and_rechained, "mac", "forged", _at(5)),
    "edited-rechained-macs-nulled": Case(
        _reason_edited_rechained_macs_nulled, "mac", "missing", _at(5)
    ),
    "edited-only": Case(_reason_edited_only, "chain", "edited", _at(5)),
    "appended-moving-head": Case(
        _appended("0" * 64, True), "mac", "forged", lambda live: live.last + 1
    ),
    "appended-without-mac-moving-head": Case(
        _appended(None, True), "mac", "missing", lambda live: live.last + 1
    ),
    "appended-past-head": Case(
        _appended(None, False), "head", "inserted", lambda live: live.last + 1
    ),
    "tail-deleted-head-moved-back": Case(
        _last_rows_deleted(True), "head-mac", "forged", lambda live: live.last - 3
    ),
    "tail-deleted-head-mac-nulled": Case(
        _last_rows_deleted(False), "head-mac", "missing", lambda live: live.last - 3
    ),
    "rows-swapped": Case(_rows_swapped, "chain", "reordered", _at(6)),
    "mac-nulled": Case(_mac_nulled, "mac", "missing", _at(7)),
    "mac-copied": Case(_mac_copied, "mac", "forged", _at(7)),
    "checkpoint-edited": Case(_checkpoint_hash_edited, "checkpoint", "signature", _at(FIRST)),
    "checkpoint-self-signed": Case(_checkpoint_self_signed, "checkpoint", "forged", _at(FIRST)),
    "rolled-back": Case(_rolled_back(False), "checkpoint", "rolled-back", lambda live: live.e2_seq),
    "rolled-back-checkpoints-deleted": Case(
        _rolled_back(True), "checkpoint", "rolled-back", lambda live: live.e2_seq, against="e2"
    ),
    "root-key-rewrite": Case(
        _rewritten_with_the_root_key(False), "checkpoint", "mismatch", _at(FIRST)
    ),
    "root-key-rewrite-checkpoints-deleted": Case(
        _rewritten_with_the_root_key(True), "checkpoint", "mismatch", _at(FIRST), against="e1"
    ),
}


@in_proc
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_forged_history_is_named(inproc: InLive, case: Case) -> None:
    kl, live = inproc.kl, inproc.live
    assert (await _verify_in(kl))["ok"]
    case.tamper(live)
    against = {"e1": live.e1, "e2": live.e2}.get(case.against or "")
    if against is not None:
        alone = await _verify_in(kl)
        assert alone["ok"], alone  # the database alone cannot show this one: the export can
    report = await _verify_in(kl, against)
    assert not report["ok"]
    problem = report["problem"]
    assert (problem["check"], problem["kind"], problem["seq"]) == (
        case.check,
        case.kind,
        case.seq(live),
    ), problem
    assert f"seq {case.seq(live)}" in problem["message"]
    count("audit forgeries")


def test_the_cli_says_which_check_failed_and_where(cli_live: tuple[RunningServer, Live]) -> None:
    server, live = cli_live
    _rewritten_with_the_root_key(True)(live)
    assert server.cli("audit", "verify").returncode == 0
    result = server.cli("audit", "verify", "--checkpoint", str(live.e1), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "keyless: error: audit log verification failed: checkpoint check, mismatch at seq "
        f"{FIRST}: seq {FIRST} is not the event the exported checkpoint of "
        f"{_when(live.e1)} signed: the log up to seq {FIRST} was rewritten (no earlier "
        "checkpoint matches)"
    ]


def _when(export: Path) -> str:
    signed = _exported_checkpoints(export)[-1]["time"]
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(signed))


def test_a_checkpoint_is_never_signed_over_a_forged_head(
    cli_live: tuple[RunningServer, Live],
) -> None:
    server, live = cli_live
    _reason_edited_and_rechained(live)
    refused = server.cli("audit", "export", check=False)
    assert refused.returncode == 1
    assert "no audit checkpoint signed: the head (seq" in refused.stderr
    assert "fails its keyed MAC" in refused.stderr


@in_proc
async def test_no_checkpoint_is_signed_over_a_forged_head_on_either_database(
    inproc: InLive,
) -> None:
    """What the CLI test above prints, asked of the admin API on SQLite and PostgreSQL."""
    _reason_edited_and_rechained(inproc.live)
    refused = await inproc.kl.admin.post("/v1/audit/checkpoints")
    assert 400 <= refused.status_code < 500, refused.text
    message = refused.json()["error"]["message"]
    assert "no audit checkpoint signed: the head (seq" in message
    assert "fails its keyed MAC" in message


# -- a log from before the key, root key rotation, a deleted key ---------------------------


def _database(backend: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgresql":
        url: str = request.getfixturevalue("make_pg_database")()
        return url
    (tmp / "data").mkdir(mode=0o700)
    return f"sqlite:///{tmp / 'data' / 'keyless.db'}"


def _legacy_log(url: str, n: int) -> None:
    """A database at revision 0004 holding ``n`` events chained as keyless wrote them then."""
    from alembic import command
    from alembic.config import Config

    from keyless.store import migrate

    engine = sa.create_engine(DatabaseUrl(url).sync_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.commit()
    with engine.begin() as conn:
        prev = GENESIS
        for seq in range(1, n + 1):
            event = AuditEvent(1.7e9 + seq, f"r{seq}", None, "secret.get", f"/s{seq}", "success")
            row = seal(prev, seq, event)
            values = _values(row)
            del values["mac"]
            conn.execute(sa.text(
                "INSERT INTO audit_events (seq, time, request_id, tenant_id, actor, action, "
                "target, result, reason, workload, prev_hash, hash) VALUES (:seq, :time, "
                ":request_id, :tenant_id, :actor, :action, :target, :result, :reason, :workload, "
                ":prev_hash, :hash)"
            ), values)  # fmt: skip
            prev = row.hash
        conn.execute(sa.text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": n, "h": prev})
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_log_from_before_the_key_verifies_and_survives_root_key_rotation(
    backend: str, servers: ServerFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _database(backend, tmp_path, request)
    _legacy_log(url, 7)
    args = ["--database", url]
    server = servers.start(*args, dev=True, data_dir=tmp_path / "data")
    _create_identities(server, ["after-the-key"])
    report = _verify(server)
    assert report["ok"], report
    assert (report["keyed_from"], report["unkeyed"], report["count"]) == (8, 7, 8)
    assert report["checkpoints"] == 1  # signed at start, over the unkeyed prefix
    with server.admin() as admin:
        (first,) = admin.get("/v1/audit/checkpoints").json()["checkpoints"]
    assert first["seq"] == 7
    text = server.cli("audit", "verify").stdout
    assert "keyed MACs checked from seq 8 (the 7 events before it predate the audit key" in text

    export = tmp_path / "before-rotation.jsonl"
    server.cli("audit", "export", "--file", str(export))
    assert server.cli("audit", "verify", "--file", str(export)).returncode == 0
    rotated = json.loads(server.cli("--output", "json", "rotate-root-key").stdout)
    assert rotated["rewrapped"] >= 3  # two signing keys and the audit key
    assert _verify(server, export)["ok"]
    assert server.stop() == 0
    again = servers.start(*args, dev=True, data_dir=server.data_dir, port=server.port)
    _create_identities(again, ["after-rotation"])
    report = _verify(again, export)
    assert report["ok"] and report["keyed_from"] == 8, report
    count("audit forgeries")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_deleted_audit_key_shows_after_a_restart(
    backend: str, servers: ServerFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A new key is made, from the head on: the keyed rows before it betray the swap. A forger
    who also strips every MAC and checkpoint is left to an earlier export."""
    url = _database(backend, tmp_path, request)
    args = ["--database", url]
    server = servers.start(*args, dev=True, data_dir=tmp_path / "data")
    _create_identities(server, [f"i{n}" for n in range(4)])
    export = tmp_path / "e.jsonl"
    server.cli("audit", "export", "--file", str(export))
    db = Db(url)
    try:
        assert server.stop() == 0
        db.sql(audit_key.delete())
        server = servers.start(*args, dev=True, data_dir=server.data_dir, port=server.port)
        problem = _verify(server)["problem"]
        assert (problem["check"], problem["kind"], problem["seq"]) == ("mac", "unexpected", 1)
        assert "the audit key was replaced" in problem["message"]

        assert server.stop() == 0
        rows = _rechain(db.rows(), _forge_reason(2), lambda _s, _h: None)
        db.write(rows)
        db.move_head(hash=rows[-1].hash, mac=None)
        db.sql(audit_key.delete())
        db.sql(audit_checkpoints.delete())
        server = servers.start(*args, dev=True, data_dir=server.data_dir, port=server.port)
        alone = _verify(server)
        assert alone["ok"] and alone["unkeyed"] == len(rows), alone  # reported, not hidden
        problem = _verify(server, export)["problem"]
        assert (problem["check"], problem["kind"], problem["seq"]) == ("checkpoint", "mismatch", 4)
    finally:
        db.close()
    count("audit forgeries", 2)


@in_proc
async def test_verify_refuses_malformed_exported_checkpoints(inproc: InLive) -> None:
    for body, message in (
        ({"checkpoints": "x"}, "'checkpoints' must be a list"),
        ({"checkpoints": [{}] * 501}, "'checkpoints' must be a list of at most 500"),
        ({"checkpoints": [{"seq": 1}]}, "'time' must be a number"),
        ({"other": 1}, "unknown member 'other'"),
    ):
        response = await inproc.kl.admin.post("/v1/audit/verify", json=body)
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]["message"]
