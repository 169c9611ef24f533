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
