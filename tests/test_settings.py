import subprocess
from pathlib import Path

import pytest

from keyless.core.errors import ConfigError
from keyless.settings import Settings, load_settings
from tests.support.server import keyless_cmd


def test_defaults() -> None:
    s = load_settings({}, {})
    assert s == Settings()
    assert s.public_url == "https://localhost:8443"
    assert s.vault_resource == "https://vault.localhost:8443"
    assert s.database.startswith("sqlite:///") and s.database.endswith(".keyless/keyless.db")


def test_flags_win_over_env_which_win_over_defaults() -> None:
    env = {
        "KEYLESS_LISTEN": "127.0.0.1:9000",
        "KEYLESS_TOKEN_LIFETIME": "2h",
        "KEYLESS_DEV": "true",
    }
    s = load_settings({"listen": "127.0.0.1:9443", "dev": None}, env)
    assert (s.listen_port, s.token_lifetime, s.dev) == (9443, 7200, True)
    assert s.public_url == "https://localhost:9443"


def test_max_in_flight_from_flag_or_env() -> None:
    assert Settings().max_in_flight == 64
    assert load_settings({}, {"KEYLESS_MAX_IN_FLIGHT": "0"}).max_in_flight == 0  # off
    assert (
        load_settings({"max_in_flight": "200"}, {"KEYLESS_MAX_IN_FLIGHT": "0"}).max_in_flight == 200
    )


@pytest.mark.parametrize(
    ("raw", "seconds"), [("0", 0), ("0s", 0), ("7", 7), ("7s", 7), ("2m", 120), ("300", 300)]
)
def test_shutdown_delay_may_be_zero(raw: str, seconds: int) -> None:
    assert Settings().shutdown_delay == 0  # a plain `keyless serve` stops at once
    assert load_settings({}, {"KEYLESS_SHUTDOWN_DELAY": raw}).shutdown_delay == seconds
    assert load_settings({"shutdown_delay": raw}, {}).shutdown_delay == seconds


@pytest.mark.parametrize("raw", ["301", "6m", "-1", "soon", ""])
def test_shutdown_delay_out_of_range(raw: str) -> None:
    with pytest.raises(ConfigError, match="--shutdown-delay"):
        load_settings({"shutdown_delay": raw}, {})


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().dev = True  # type: ignore[misc]


def test_foreign_test_variables_are_ignored() -> None:
    load_settings({}, {"KEYLESS_TEST_DATABASE_URL": "postgresql://x/y"})


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {"KEYLESS_LISTN": "x"}, "unknown environment variable KEYLESS_LISTN"),
        ({"tls_cert": "c.pem"}, {}, "--tls-cert and --tls-key must be given together"),
        ({"tls_cert": "c", "tls_key": "k", "insecure_http": True}, {}, "conflicts"),
        ({"listen": "nonsense"}, {}, "is not HOST:PORT"),
        ({"listen": "127.0.0.1:70000"}, {}, "is not HOST:PORT"),
        ({"token_lifetime": "ten"}, {}, "is not a duration"),
        ({"signing_alg": "HS256"}, {}, "is not a signing algorithm"),
        ({"public_url": "ftp://x"}, {}, "is not a URL"),
        ({"public_url": "http://localhost:8443"}, {}, "is http but the listener is https"),
        ({"database_url": "mysql://x"}, {}, "is not sqlite:///PATH or postgresql"),
        ({}, {"KEYLESS_DEV": "maybe"}, "is not a boolean"),
        ({"colour": "blue"}, {}, "unknown option --colour"),
        ({"max_in_flight": "-1"}, {}, "--max-in-flight: '-1' must be a whole number"),
    ],
    ids=[
        "unknown-env",
        "cert-without-key",
        "http-and-tls",
        "bad-listen",
        "bad-port",
        "bad-duration",
        "hmac-alg",
        "bad-url",
        "scheme-mismatch",
        "bad-db",
        "bad-bool",
        "unknown-flag",
        "negative-max-in-flight",
    ],
)
def test_bad_config_fails_with_one_line(flags: dict, env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        load_settings(flags, env)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "x.pem"], "--tls-cert and --tls-key must be given together"),
        (["--listen", "localhost"], "is not HOST:PORT"),
        (["--signing-alg", "none"], "is not a signing algorithm"),
    ],
)
def test_serve_fails_fast_on_bad_config(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [*keyless_cmd(), "--data-dir", str(tmp_path), "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("keyless: error:")
    assert not (tmp_path / "root.key").exists()
