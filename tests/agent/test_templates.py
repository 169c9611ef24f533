"""Templates rendered by the agent against a real keyless, one per output format, each read
back by the parser its consumers use; and the sandbox refusing a template that reaches for
Python's internals (the file is not written, the line names no value)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.agent.conftest import Vaults, run_agent

# A value every format has to escape: quotes, a backslash, an equals sign, a newline,
# a dollar sign and a non-ASCII letter.
TRICKY = 'it\'s "q" \\ a=b $HOME\nline2 é'


@pytest.fixture(scope="module")
def tricky(kv: Vaults) -> Vaults:
    kv.set("tricky", TRICKY)
    kv.set("plain", "plain-value-42")
    kv.set("config", json.dumps({"host": "db.internal", "port": 5432}))
    return kv


def render(kv: Vaults, tmp_path: Path, source: str) -> str:
    template, out = tmp_path / "t.j2", tmp_path / "out"
    template.write_text(source)
    done = run_agent(kv, "--once", "--template", f"{template}={out}")
    assert done.returncode == 0, done.stderr
    assert TRICKY not in done.stderr + done.stdout
    return out.read_text()


def test_env_file_reads_back_through_the_shell(tricky: Vaults, tmp_path: Path) -> None:
    text = render(
        tricky,
        tmp_path,
        '{{ {"DB_PASSWORD": secret("billing/tricky"), "PLAIN": secret("billing/plain")}'
        " | env_file }}",
    )
    shell = subprocess.run(
        ["sh", "-c", f'set -a; . {tmp_path / "out"}; printf %s "$DB_PASSWORD"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert shell.stdout == TRICKY
    assert "PLAIN='plain-value-42'" in text.splitlines()


def test_json_and_from_json(tricky: Vaults, tmp_path: Path) -> None:
    text = render(
        tricky,
        tmp_path,
        '{% set c = secret("billing/config") | from_json %}'
        '{{ {"password": secret("billing/tricky"), "host": c.host, "port": c.port} | json }}',
    )
    assert json.loads(text) == {"password": TRICKY, "host": "db.internal", "port": 5432}


def test_yaml(tricky: Vaults, tmp_path: Path) -> None:
    text = render(
        tricky,
        tmp_path,
        'database:\n  password: {{ secret("billing/tricky") | yaml }}\n'
        '{{ {"extra": [secret("billing/plain")]} | yaml }}',
    )
    assert yaml.safe_load(text) == {
        "database": {"password": TRICKY},
        "extra": ["plain-value-42"],
    }


def parse_properties(text: str) -> dict[str, str]:
    """java.util.Properties.load for the subset the filter writes (one line per entry)."""
    found = {}
    for line in text.splitlines():
        key, value, i, escaped = [], [], 0, False
        target = key
        while i < len(line):
            ch = line[i]
            if escaped:
                if ch == "u":
                    target.append(chr(int(line[i + 1 : i + 5], 16)))
                    i += 4
                else:
                    target.append({"n": "\n", "r": "\r", "t": "\t", "f": "\f"}.get(ch, ch))
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch in "=:" and target is key:
                target = value
            else:
                target.append(ch)
            i += 1
        # Java strings are UTF-16: a pair of \\u escapes is one character beyond the BMP.
        found[_utf16("".join(key))] = _utf16("".join(value))
    return found


def _utf16(text: str) -> str:
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def test_properties(tricky: Vaults, tmp_path: Path) -> None:
    text = render(
        tricky,
        tmp_path,
        '{{ {"db.password": secret("billing/tricky"), "a key": secret("billing/plain")}'
        " | properties }}",
    )
    assert text.isascii()
    assert parse_properties(text) == {"db.password": TRICKY, "a key": "plain-value-42"}


def test_raw(tricky: Vaults, tmp_path: Path) -> None:
    text = render(tricky, tmp_path, '{{ secret("billing/tricky") | raw }}')
    assert text == TRICKY


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ secret.__globals__['os'].system('id') }}",
        '{{ secret("billing/plain").__class__.__base__ }}',
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
    ids=["str-subclasses", "function-globals", "value-class", "cycler-globals"],
)
def test_sandbox_refuses_escapes(tricky: Vaults, tmp_path: Path, source: str) -> None:
    template, out = tmp_path / "evil.j2", tmp_path / "out"
    template.write_text(source)
    done = run_agent(tricky, "--once", "--template", f"{template}={out}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "refused by the sandbox" in lines[0] or "is undefined" in lines[0]
    assert not out.exists()


def test_non_literal_reference_and_undefined_name_are_errors(
    tricky: Vaults, tmp_path: Path
) -> None:
    template, out = tmp_path / "t.j2", tmp_path / "out"
    template.write_text('{% set n = "billing/plain" %}{{ secret(n) }}')
    done = run_agent(tricky, "--once", "--template", f"{template}={out}")
    assert done.returncode == 2 and "one literal string" in done.stderr
    template.write_text('{{ secret("billing/plain") }}{{ pasword }}')
    done = run_agent(tricky, "--once", "--template", f"{template}={out}")
    assert done.returncode == 1 and "'pasword' is undefined" in done.stderr
    assert not out.exists()
