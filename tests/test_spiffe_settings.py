"""``--svid-ttl`` / ``KEYLESS_SVID_TTL``: the X.509-SVID lifetime, 1 minute to 24 hours."""

from __future__ import annotations

import pytest

from keyless.core.errors import ConfigError
from keyless.settings import load_settings


def test_svid_ttl_defaults_to_an_hour_and_takes_a_duration() -> None:
    assert load_settings({}, {}).svid_ttl == 3600
    assert load_settings({"svid_ttl": "15m"}, {}).svid_ttl == 900
    assert load_settings({}, {"KEYLESS_SVID_TTL": "2h"}).svid_ttl == 7200


@pytest.mark.parametrize("value", ["30s", "2d"])
def test_svid_ttl_out_of_bounds_fails_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match="svid-ttl"):
        load_settings({"svid_ttl": value}, {})


def test_the_upstream_ca_and_its_key_go_together(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="must be given together"):
        load_settings({"spiffe_upstream_ca": tmp_path / "ca.pem"}, {})
    with pytest.raises(ConfigError, match="must be given together"):
        load_settings({}, {"KEYLESS_SPIFFE_UPSTREAM_KEY": str(tmp_path / "key.pem")})
    both = load_settings(
        {},
        {
            "KEYLESS_SPIFFE_UPSTREAM_CA": str(tmp_path / "ca.pem"),
            "KEYLESS_SPIFFE_UPSTREAM_KEY": str(tmp_path / "key.pem"),
        },
    )
    assert both.spiffe_upstream_ca == tmp_path / "ca.pem"


def test_mtls_listen_from_a_flag_or_the_environment() -> None:
    assert load_settings({}, {}).mtls_port is None  # not started unless asked for
    flag = load_settings({"mtls_listen": "0.0.0.0:8445"}, {})
    assert (flag.mtls_host, flag.mtls_port) == ("0.0.0.0", 8445)  # noqa: S104
    env = load_settings({}, {"KEYLESS_MTLS_LISTEN": "[::1]:9000"})
    assert (env.mtls_host, env.mtls_port) == ("::1", 9000)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            {"mtls_listen": "8445"}, "--mtls-listen: '8445' is not HOST:PORT", id="no-host"
        ),
        pytest.param(
            {"mtls_listen": "127.0.0.1:70000"}, "not HOST:PORT with a port", id="port-range"
        ),
        pytest.param(
            {"mtls_listen": "keyless.example:8445"}, "is not an IP address", id="host-name"
        ),
        pytest.param(
            {"mtls_listen": "127.0.0.1:8443"}, "port 8443 is the public listener's", id="same-port"
        ),
        pytest.param(
            {"listen": "127.0.0.1:9443", "mtls_listen": "127.0.0.1:9443"},
            "port 9443 is the public listener's",
            id="same-port-moved",
        ),
        pytest.param(
            {"mtls_listen": "127.0.0.1:8445", "insecure_http": True},
            "--mtls-listen conflicts with --insecure-http",
            id="insecure-http",
        ),
        pytest.param(
            {
                "mtls_listen": "127.0.0.1:8444",
                "webhook_listen": "127.0.0.1:8444",
                "webhook_insecure_no_client_auth": True,
            },
            "port 8444 is the webhook listener's",
            id="webhook-port",
        ),
    ],
)
def test_bad_mtls_listen_fails_at_start_in_one_line(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(flags, {})
    assert "\n" not in str(caught.value)
