"""Property tests (Hypothesis) for the agent's parsers and output formats: whatever a secret
holds, each format reads back to it with the parser its consumers use, and a declaration's
path survives the suffix parsing."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from keyless.agent import config as cfg
from keyless.agent.refs import SecretRef
from keyless.agent.templates import SecretTemplate
from tests.agent.test_templates import parse_properties

# What a Key Vault secret can hold: any text but NUL (and lone surrogates, which no UTF-8
# file can hold).
VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
REF = SecretRef("billing", "db")


def render(source: str, value: str) -> str:
    return SecretTemplate(source, "t").render({REF: value})


@given(VALUES)
def test_shell_quote_reads_back_through_posix_shlex(value: str) -> None:
    assert shlex.split(render('{{ secret("billing/db") | shell_quote }}', value)) == [value]


@given(st.dictionaries(NAMES, VALUES, max_size=4), VALUES)
def test_env_file_lines_read_back(extra: dict[str, str], value: str) -> None:
    values = {**extra, "SECRET": value}
    text = SecretTemplate("{{ values | env_file }}", "t").template.render(values=values)
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.whitespace = "\n"
    read = dict(word.split("=", 1) for word in lexer)
    assert read == values


@given(VALUES)
def test_json_and_yaml_read_back(value: str) -> None:
    assert json.loads(render('{{ {"v": secret("billing/db")} | json }}', value)) == {"v": value}
    assert yaml.safe_load(render('{{ {"v": secret("billing/db")} | yaml }}', value)) == {"v": value}
    assert yaml.safe_load(render('v: {{ secret("billing/db") | yaml }}', value)) == {"v": value}


@given(VALUES, VALUES.filter(lambda k: k != ""))
def test_properties_read_back(value: str, key: str) -> None:
    text = SecretTemplate("{{ values | properties }}", "t").template.render(values={key: value})
    assert text.isascii()
    assert parse_properties(text) == {key: value}


@given(st.from_regex(r"/[A-Za-z0-9_.,=/ -]{1,40}", fullmatch=True))
def test_declaration_paths_survive_suffix_parsing(path: str) -> None:
    (out,) = cfg.parse_outputs([f"billing/db={path},mode=0440"], [], euid=0)
    assert out.path == Path(path) and out.mode == 0o440
