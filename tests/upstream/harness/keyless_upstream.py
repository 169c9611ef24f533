"""pytest plugin (``-p keyless_upstream``) of the run of upstream's tests against keyless.

- ``*.vault.localhost`` resolves to the loopback address in this process (keyless.localresolve);
- the markers upstream's repository registers in its root conftest are registered here;
- each test's module and class pick its vault (keyless_vaults);
- the SDK's DEBUG network trace (the logging tests turn it on; a failed test's report shows what
  was logged) names the bearer token redacted, as its INFO log does;
- every test's outcome is written as JSON to ``KEYLESS_UPSTREAM_REPORT`` for the runner.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import keyless_vaults
import pytest

from keyless import localresolve

_outcomes: dict[str, dict[str, Any]] = {}


class RedactBearer(logging.Filter):
    """azure-core's NetworkTraceLoggingPolicy logs every request header as ``'NAME': 'VALUE'``."""

    HEADER = re.compile(r"('authorization': ')[^']*'", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.HEADER.sub(r"\1REDACTED'", record.msg)
        return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live_test_only: runs only against a live service")
    config.addinivalue_line("markers", "playback_test_only: runs only from recordings")
    logging.getLogger("azure.core.pipeline.policies._universal").addFilter(RedactBearer())
    localresolve.install(os.environ.get("KEYLESS_UPSTREAM_VAULT_DOMAIN", "vault.localhost"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    cls = getattr(item, "cls", None)
    module = getattr(item, "module", None)
    keyless_vaults.current_key = (
        f"{module.__name__ if module else item.nodeid}::{cls.__name__ if cls else ''}"
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _outcomes.setdefault(report.nodeid, {"outcome": "passed", "duration": 0.0})
    entry["duration"] += report.duration
    if report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"
        entry.setdefault("longrepr", str(report.longrepr)[-4000:])
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        entry["longrepr"] = str(report.longrepr)[-500:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("KEYLESS_UPSTREAM_REPORT")
    if path and not hasattr(session.config, "workerinput"):
        with open(path, "w", encoding="utf-8") as out:
            json.dump(_outcomes, out, indent=1, sort_keys=True)
