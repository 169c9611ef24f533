"""Templates: Jinja2 in its sandbox (``SandboxedEnvironment``, ``StrictUndefined``), the way a
Vault Agent user writes ``{{ with secret "..." }}``, with one function and a few output filters::

    DB_PASSWORD={{ secret("billing/db-password") | shell_quote }}
    {{ {"user": "billing", "password": secret("billing/db-password")} | json }}
    {{ {"DB_USER": "billing", "DB_PASSWORD": secret("billing/db-password")} | env_file }}

``secret("VAULT/NAME[/VERSION]")`` is the secret's value. Its argument must be a literal string:
the agent reads the references from the template before rendering it, so it knows at start
which secrets a file depends on (and a typo is an error then, not at the first render).

``database("DATABASE/ROLE")`` is the current dynamic credentials of a database role (issue
20), a mapping ``{username, password, host, port, dbname, sslmode, expires_at}``; the file is
rendered again whenever they are renewed or replaced::

    {% set db = database("backstage/app") %}
    {{ db | pgpass }}                          (a libpq .pgpass line, ':' and '\\' escaped)
    connection:
      host: {{ db.host | yaml }}
      port: {{ db.port }}
      user: {{ db.username | yaml }}
      password: {{ db.password | yaml }}

Filters: ``env_file`` (a mapping as ``NAME='value'`` lines, POSIX shell quoting, readable by
``. FILE`` and ``set -a``), ``json``, ``yaml``, ``properties`` (Java ``.properties``, ISO-8859-1
safe), ``shell_quote``, ``raw`` (the value as it is, the default), and ``from_json`` /
``from_yaml`` to read a structured secret. The sandbox refuses underscore attributes, unsafe
methods and any access outside these names; StrictUndefined makes a misspelt name an error
instead of an empty string in a credentials file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import yaml
from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from keyless.agent.dbrefs import DbRef
from keyless.agent.refs import SecretRef
from keyless.core.errors import ConfigError, KeylessError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
T = TypeVar("T")


class TemplateFailed(KeylessError):
    """A template could not be rendered (a missing name, the sandbox refused, a bad filter
    input); its file keeps its last good content."""

    code = "template"


def _env_file(values: Mapping[str, Any]) -> str:
    if not isinstance(values, Mapping):
        raise TemplateFailed("env_file takes a mapping of variable names to values")
    lines = []
    for name, value in values.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise TemplateFailed(f"env_file: {str(name)[:60]!r} is no variable name")
        lines.append(f"{name}={_shell_quote(value)}")
    return "\n".join(lines) + ("\n" if lines else "")


def _shell_quote(value: Any) -> str:
    # Always quoted (shlex.quote leaves a plain word bare): a value reads the same whatever
    # it holds, and a reader that splits NAME='value' by hand meets one form only.
    return "'" + str(value).replace("'", "'\\''") + "'"


def _json(value: Any, indent: int | None = 2) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML has no type stubs here
    """Strings with line breaks other than ``\\n`` (NEL, LS, PS) or non-printable characters
    double-quoted with escapes: PyYAML's own choice (single quotes) does not read back for
    them."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    odd = any(ch in "\x85\u2028\u2029" or not (ch.isprintable() or ch in "\n\t") for ch in data)
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if odd else None)


_Dumper.add_representer(str, _represent_str)
_NO_FOLD = 2**31  # a width no line reaches: a folded scalar would break the embedding line


def _yaml(value: Any) -> str:
    """A mapping or list as block YAML; a scalar as one double-quoted line, to embed after a
    key (``password: {{ secret("v/n") | yaml }}``)."""
    if isinstance(value, (Mapping, list, tuple)):
        plain = dict(value) if isinstance(value, Mapping) else list(value)
        dumped = yaml.dump(
            plain,
            Dumper=_Dumper,
            default_flow_style=False,
            sort_keys=False,
            allow_unicode=True,
            width=_NO_FOLD,
        )
        return str(dumped)
    dumped = yaml.dump(value, Dumper=_Dumper, default_style='"', allow_unicode=True, width=_NO_FOLD)
    return str(dumped).rstrip("\n")


def _properties_escape(text: str, *, key: bool) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\f":
            out.append("\\f")
        elif ch in "=:#!" or (ch == " " and (key or i == 0)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            out.append("".join(f"\\u{unit:04x}" for unit in _utf16(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _utf16(ch: str) -> Iterable[int]:
    data = ch.encode("utf-16-be")
    return (int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


def _properties(values: Any) -> str:
    if not isinstance(values, Mapping):
        return _properties_escape(str(values), key=False)
    lines = [
        f"{_properties_escape(str(k), key=True)}={_properties_escape(str(v), key=False)}"
        for k, v in values.items()
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def _pgpass_field(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace(":", "\\:")


def _pgpass(db: Any) -> str:
    """One libpq password-file line ``host:port:dbname:username:password``."""
    if not isinstance(db, Mapping):
        raise TemplateFailed('pgpass takes database("DATABASE/ROLE")')
    try:
        fields = [db["host"], db["port"], db["dbname"], db["username"], db["password"]]
    except KeyError:
        raise TemplateFailed('pgpass takes database("DATABASE/ROLE")') from None
    return ":".join(_pgpass_field(f) for f in fields) + "\n"


def _from_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise TemplateFailed("from_json: the value is no JSON") from None


def _from_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise TemplateFailed("from_yaml: the value is no YAML") from None


def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters.update(
        env_file=_env_file,
        json=_json,
        yaml=_yaml,
        properties=_properties,
        shell_quote=_shell_quote,
        raw=lambda value: value,
        from_json=_from_json,
        from_yaml=_from_yaml,
        pgpass=_pgpass,
    )
    return env


class SecretTemplate:
    """One template: parsed and its secret references read at start; rendered each round
    with the values read for them."""

    def __init__(self, source: str, name: str) -> None:
        self.name = name
        self.env = environment()
        try:
            tree = self.env.parse(source, name=name)
            self.template = self.env.from_string(tree)
        except TemplateError as exc:
            raise ConfigError(f"template {name}: {_first_line(exc)}") from None
        self.refs = frozenset(_references(tree, name, "secret", SecretRef.parse))
        self.databases = frozenset(_references(tree, name, "database", DbRef.parse))

    def render(
        self,
        values: Mapping[SecretRef, str],
        databases: Mapping[DbRef, Mapping[str, Any]] | None = None,
    ) -> str:
        def secret(text: str) -> str:
            ref = SecretRef.parse(str(text))
            if ref not in self.refs:
                raise TemplateFailed(f"secret({str(text)[:80]!r}) must be called with a literal")
            return values[ref]

        def database(text: str) -> dict[str, Any]:
            ref = DbRef.parse(str(text))
            if ref not in self.databases or databases is None:
                raise TemplateFailed(f"database({str(text)[:80]!r}) must be called with a literal")
            return dict(databases[ref])

        try:
            return self.template.render(secret=secret, database=database)
        except SecurityError as exc:
            raise TemplateFailed(
                f"template {self.name}: refused by the sandbox ({_first_line(exc)})"
            ) from None
        except TemplateFailed as exc:
            raise TemplateFailed(f"template {self.name}: {exc.message}") from None
        except (TemplateError, ConfigError) as exc:  # names and references, never values
            raise TemplateFailed(f"template {self.name}: {_first_line(exc)}") from None
        except Exception as exc:
            # Python's own messages may quote the operand (int("...") does): a secret value
            # must not reach the log, so only the kind of error and where.
            where = _line(exc, self.name)
            raise TemplateFailed(
                f"template {self.name}{where}: {type(exc).__name__} while rendering"
            ) from None


def _references(
    tree: nodes.Template, name: str, function: str, parse: Callable[[str], T]
) -> set[T]:
    """The arguments of every ``function("...")`` call, parsed; each must be one literal."""
    refs: set[T] = set()
    example = "billing/db-password" if function == "secret" else "backstage/app"
    for call in tree.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == function):
            continue
        args = call.args
        if (
            len(args) != 1
            or call.kwargs
            or not isinstance(args[0], nodes.Const)
            or not isinstance(args[0].value, str)
        ):
            raise ConfigError(
                f"template {name} line {call.lineno}: {function}() takes one literal string, "
                f'e.g. {function}("{example}")'
            )
        refs.add(parse(args[0].value))
    return refs


def _line(exc: BaseException, name: str) -> str:
    """`` line N`` of the template where ``exc`` was raised (Jinja rewrites tracebacks so
    that template frames carry the template's name and line), or nothing."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" line {line}" if line else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
