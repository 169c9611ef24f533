"""The files mode (``--svid-dir``): svid.pem, svid_key.pem (0600) and bundle.pem written
atomically, matching each other, and replaced at each renewal; the CLI's option checks."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from keyless.cli.main import app
from tests.agent.spiffe_support import WORKLOAD_ID, AgentThread, LocalIssuer
from tests.support.waiting import eventually


def _files(directory: Path) -> tuple[x509.Certificate, object, x509.Certificate]:
    chain = x509.load_pem_x509_certificates((directory / "svid.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "svid_key.pem").read_bytes(), None)
    (ca,) = x509.load_pem_x509_certificates((directory / "bundle.pem").read_bytes())
    return chain[0], key, ca


def test_svid_files_written_and_rotated(tmp_path: Path):
    out = tmp_path / "svid"
    issuer = LocalIssuer(ttl=4.0)
    running = AgentThread(issuer, socket=None, svid_dir=out)
    try:
        assert eventually(lambda: (out / "bundle.pem").exists(), timeout=10)
        leaf, key, ca = _files(out)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WORKLOAD_ID]
        leaf.verify_directly_issued_by(ca)
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[attr-defined]
        assert stat.S_IMODE((out / "svid_key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE((out / "svid.pem").stat().st_mode) == 0o644
        first_serial = leaf.serial_number
        # renewed at half of 4s: a new certificate on a new key, the pair still matching
        assert eventually(lambda: _files(out)[0].serial_number != first_serial, timeout=8)
        leaf2, key2, _ = _files(out)
        assert leaf2.public_key().public_numbers() == key2.public_key().public_numbers()  # type: ignore[attr-defined]
        assert leaf2.public_key().public_numbers() != leaf.public_key().public_numbers()
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    finally:
        running.stop()


def test_cli_refuses_spiffe_with_once(tmp_path: Path):
    result = CliRunner().invoke(
        app, ["agent", "--once", "--svid-dir", str(tmp_path / "svid")], catch_exceptions=True
    )
    assert result.exit_code != 0
    assert "not with --once" in (result.output + str(result.exception))


def test_outage_keeps_the_current_svid_and_retries(tmp_path: Path):
    out = tmp_path / "svid"
    issuer = LocalIssuer(ttl=6.0)
    running = AgentThread(issuer, socket=None, svid_dir=out)
    try:
        assert eventually(lambda: (out / "svid.pem").exists(), timeout=10)
        first = _files(out)[0].serial_number
        issuer.down = True
        # the renewal at ~3s fails: the files keep the current SVID
        assert eventually(lambda: issuer.refused >= 1, timeout=6)
        assert _files(out)[0].serial_number == first
        issuer.down = False  # the retry (backoff 1-2s) gets a new one before expiry
        assert eventually(lambda: _files(out)[0].serial_number != first, timeout=5)
    finally:
        running.stop()
