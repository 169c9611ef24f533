"""The agent's options, parsed once at start into frozen, typed settings (a bad declaration is
one line and exit 2, before anything is fetched or written).

Declarations (``--secret``, ``--template``) end in optional ``,mode=0400`` and
``,owner=UID:GID`` suffixes that override ``--mode`` and ``--owner`` for that file only::

    --secret billing/db-password=/run/secrets/db-password,mode=0440,owner=0:1000
    --template /etc/agent/db.env.j2=/run/secrets/db.env
    --database-creds backstage/app=/run/secrets/db.json
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keyless.agent.dbrefs import DbRef
from keyless.agent.refs import SecretRef
from keyless.core.errors import ConfigError

if TYPE_CHECKING:
    from keyless.agent.pgproxy import ProxySpec

DEFAULT_MODE = 0o600
DEFAULT_INTERVAL = 60.0
DEFAULT_JITTER = 0.1  # each wait is interval x (1 +- jitter)
DEFAULT_BACKOFF_CAP = 60.0
_SUFFIX = re.compile(r",(mode|owner)=([^,]*)\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    gid: int

    @classmethod
    def parse(cls, text: str) -> Owner:
        uid, sep, gid = text.partition(":")
        if not sep or not uid.isdigit() or not gid.isdigit():
            raise ConfigError(f"owner {text!r}: expected UID:GID (numbers, e.g. 1000:1000)")
        return cls(int(uid), int(gid))


def parse_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(f"mode {text!r}: expected an octal file mode such as 0400") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"mode {text!r}: expected permission bits 0000..0777")
    return mode


@dataclass(frozen=True, slots=True)
class Template:
    """A template file's path and its source, read once at start."""

    path: Path
    source: str


@dataclass(frozen=True, slots=True)
class FileOutput:
    """One file the agent keeps current: a secret's value as it is, a rendered template, or
    a database role's current credentials as JSON (``--database-creds``)."""

    path: Path
    source: SecretRef | Template | DbRef
    mode: int = DEFAULT_MODE
    owner: Owner | None = None

    @property
    def label(self) -> str:
        """What the logs name the file's source by (never its content)."""
        if isinstance(self.source, Template):
            return str(self.source.path)
        return str(self.source)


@dataclass(frozen=True, slots=True)
class Notify:
    """What to tell the application after a round changed files."""

    command: tuple[str, ...] = ()  # --on-change, run without a shell
    signal: signal.Signals | None = None
    pid_file: Path | None = None
    process: str | None = None  # a process name (/proc/PID/comm), with a shared PID namespace

    @property
    def wanted(self) -> bool:
        return bool(self.command) or self.signal is not None


@dataclass(frozen=True, slots=True)
class Schedule:
    interval: float = DEFAULT_INTERVAL
    jitter: float = DEFAULT_JITTER
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    backoff_base: float = 1.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    outputs: tuple[FileOutput, ...]
    once: bool = False
    schedule: Schedule = field(default_factory=Schedule)
    notify: Notify = field(default_factory=Notify)
    proxies: tuple[ProxySpec, ...] = ()  # --pg-proxy

    @property
    def databases(self) -> frozenset[DbRef]:
        """Every database role whose credentials the agent keeps (files, templates, proxies)."""
        found = {p.ref for p in self.proxies}
        for out in self.outputs:
            if isinstance(out.source, DbRef):
                found.add(out.source)
        return frozenset(found)


@dataclass(frozen=True, slots=True)
class ExecConfig:
    env: tuple[tuple[str, SecretRef], ...]  # (variable, secret), in the order given
    command: tuple[str, ...]
    restart_on_change: bool = False
    schedule: Schedule = field(default_factory=Schedule)
    grace: float = 10.0  # SIGTERM to SIGKILL when restarting the child


def _split_suffixes(text: str) -> tuple[str, dict[str, str]]:
    """``X,mode=0400,owner=1:2`` -> ``("X", {"mode": "0400", "owner": "1:2"})``; only known
    keys at the end are suffixes, so a path may still hold a comma."""
    found: dict[str, str] = {}
    while (match := _SUFFIX.search(text)) is not None:
        key, value = match.group(1), match.group(2)
        if key in found:
            raise ConfigError(f"{text!r}: {key}= given twice")
        found[key] = value
        text = text[: match.start()]
    return text, found


def _declaration(
    option: str, text: str, default_mode: int, default_owner: Owner | None
) -> tuple[str, Path, int, Owner | None]:
    body, suffixes = _split_suffixes(text)
    left, sep, right = body.partition("=")  # a reference never holds "="; a path may
    if not sep or not left or not right:
        raise ConfigError(f"{option} {text!r}: expected SOURCE=PATH[,mode=0400][,owner=UID:GID]")
    mode = parse_mode(suffixes["mode"]) if "mode" in suffixes else default_mode
    owner = Owner.parse(suffixes["owner"]) if "owner" in suffixes else default_owner
    return left, Path(right), mode, owner


def check_owner(owner: Owner | None, *, euid: int | None = None) -> None:
    """Only root may give a file away; anyone may name themselves."""
    euid = os.geteuid() if euid is None else euid
    if owner is not None and euid != 0 and owner.uid != euid:
        raise ConfigError(
            f"owner {owner.uid}:{owner.gid} needs the agent to run as root (it runs as uid {euid})"
        )


def parse_outputs(
    secrets: list[str],
    templates: list[str],
    *,
    mode: str | None = None,
    owner: str | None = None,
    euid: int | None = None,
    database_creds: list[str] | None = None,
) -> tuple[FileOutput, ...]:
    default_mode = parse_mode(mode) if mode else DEFAULT_MODE
    default_owner = Owner.parse(owner) if owner else None
    outputs: list[FileOutput] = []
    for text in secrets:
        ref, path, m, o = _declaration("--secret", text, default_mode, default_owner)
        outputs.append(FileOutput(path, SecretRef.parse(ref), m, o))
    for text in templates:
        file, path, m, o = _declaration("--template", text, default_mode, default_owner)
        try:
            source = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--template {file}: cannot read it ({exc})") from exc
        outputs.append(FileOutput(path, Template(Path(file), source), m, o))
    for text in database_creds or []:
        pair, path, m, o = _declaration("--database-creds", text, default_mode, default_owner)
        outputs.append(FileOutput(path, DbRef.parse(pair), m, o))
    seen: set[Path] = set()
    for out in outputs:
        resolved = out.path.absolute()
        if resolved in seen:
            raise ConfigError(f"{out.path} is declared twice")
        seen.add(resolved)
        check_owner(out.owner, euid=euid)
    return tuple(outputs)


def parse_env(declarations: list[str]) -> tuple[tuple[str, SecretRef], ...]:
    found: list[tuple[str, SecretRef]] = []
    for text in declarations:
        name, sep, ref = text.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise ConfigError(
                f"--secret-env {text!r}: expected NAME=VAULT/SECRET with NAME a variable name"
            )
        if name in {n for n, _ in found}:
            raise ConfigError(f"--secret-env: {name} is declared twice")
        found.append((name, SecretRef.parse(ref)))
    return tuple(found)


def parse_signal(name: str) -> signal.Signals:
    text = name.upper()
    text = text if text.startswith("SIG") else f"SIG{text}"
    try:
        return signal.Signals[text]
    except KeyError:
        raise ConfigError(f"--signal {name!r}: no such signal (e.g. HUP, USR1, TERM)") from None


def parse_schedule(interval: str, jitter: float, backoff_cap: str) -> Schedule:
    seconds = parse_duration(interval, "--interval")
    cap = parse_duration(backoff_cap, "--backoff-cap")
    if seconds <= 0:
        raise ConfigError("--interval must be more than 0")
    if not 0 <= jitter < 1:
        raise ConfigError("--jitter must be a fraction in [0, 1), e.g. 0.1")
    return Schedule(interval=seconds, jitter=jitter, backoff_cap=max(cap, 0.1))


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")


def parse_duration(text: str, option: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{option} {text!r}: expected a duration such as 500ms, 30s, 5m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
