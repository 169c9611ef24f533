"""The agent's options parsed into its frozen settings: declarations with their mode and owner
suffixes, and the one-line errors for what cannot work."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from keyless.agent import config as cfg
from keyless.agent.refs import SecretRef
from keyless.core.errors import ConfigError


def test_declarations_take_mode_and_owner_suffixes(tmp_path: Path) -> None:
    template = tmp_path / "t.j2"
    template.write_text('{{ secret("billing/db") }}')
    outputs = cfg.parse_outputs(
        [
            "billing/db-password=/run/s/db,mode=0440,owner=0:1000",
            "billing/ab=/run/s/with,comma=x",
            "billing/k/0123456789abcdef0123456789ABCDEF=/run/s/pinned",
        ],
        [f"{template}=/run/s/db.env,mode=0400"],
        mode="0640",
        euid=0,
    )
    db, comma, pinned, rendered = outputs
    assert (db.path, db.mode, db.owner) == (Path("/run/s/db"), 0o440, cfg.Owner(0, 1000))
    assert db.source == SecretRef("billing", "db-password")
    # Only known keys at the end are suffixes; the path keeps its comma and "=".
    assert comma.path == Path("/run/s/with,comma=x") and comma.mode == 0o640
    assert pinned.source == SecretRef("billing", "k", "0123456789abcdef0123456789abcdef")
    assert isinstance(rendered.source, cfg.Template) and rendered.mode == 0o400


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (["billing/db"], "expected SOURCE=PATH"),
        (["billing=/x"], "expected VAULT/NAME"),
        (["bill ing/db=/x"], "no vault name"),
        (["billing/db_pw=/x"], "no secret name"),
        (["billing/db/v1=/x"], "no secret version"),
        (["billing/db=/x,mode=999"], "octal file mode"),
        (["billing/db=/x,mode=01777"], "0000..0777"),
        (["billing/db=/x,owner=app"], "UID:GID"),
        (["billing/db=/x,mode=0400,mode=0600"], "given twice"),
        (["billing/a=/x", "billing/b=/x"], "declared twice"),
        (["billing/db=/x,owner=0:0"], "needs the agent to run as root"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_declarations_are_config_errors(secrets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg.parse_outputs(secrets, [], euid=1000)


def test_a_non_root_agent_may_name_itself_as_owner() -> None:
    (out,) = cfg.parse_outputs(["billing/db=/x"], [], owner="1000:1000", euid=1000)
    assert out.owner == cfg.Owner(1000, 1000)


def test_env_declarations_signals_and_durations() -> None:
    assert cfg.parse_env(["DB=billing/db", "_K2=billing/k"]) == (
        ("DB", SecretRef("billing", "db")),
        ("_K2", SecretRef("billing", "k")),
    )
    for bad in ("2DB=billing/db", "DB", "A-B=billing/x"):
        with pytest.raises(ConfigError):
            cfg.parse_env([bad])
    with pytest.raises(ConfigError, match="twice"):
        cfg.parse_env(["DB=billing/a", "DB=billing/b"])
    assert cfg.parse_signal("hup") is signal.SIGHUP
    assert cfg.parse_signal("SIGUSR1") is signal.SIGUSR1
    with pytest.raises(ConfigError, match="no such signal"):
        cfg.parse_signal("NOPE")
    assert cfg.parse_duration("500ms", "--x") == 0.5
    assert cfg.parse_duration("2m", "--x") == 120
    assert cfg.parse_duration("7", "--x") == 7
    with pytest.raises(ConfigError, match="duration"):
        cfg.parse_duration("1d", "--interval")
    with pytest.raises(ConfigError, match="more than 0"):
        cfg.parse_schedule("0s", 0.1, "60s")
    with pytest.raises(ConfigError, match="jitter"):
        cfg.parse_schedule("1s", 1.5, "60s")


def test_processes_are_found_by_name_in_proc(tmp_path: Path) -> None:
    from keyless.agent.notify import pids_named

    for pid, comm in ((101, "nginx"), (102, "postgres"), (103, "nginx"), (104, "averylongname-1")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    (tmp_path / "self").mkdir()
    assert sorted(pids_named("nginx", tmp_path)) == [101, 103]
    # The kernel keeps 15 characters of a name.
    assert pids_named("averylongname-12345", tmp_path) == [104]
    assert pids_named("redis", tmp_path) == []
