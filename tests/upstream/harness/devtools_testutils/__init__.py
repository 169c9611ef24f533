"""A stand-in for azure-sdk-for-python's ``devtools_testutils``, enough to run the
azure-keyvault-secrets tests of the sdist live against keyless.

Upstream's harness has three modes: playback (recordings replayed by a test proxy), record and
live (both against Azure). This stand-in is a fourth: live against keyless, nothing recorded.

- ``is_live()`` answers False. Upstream asks it whether the tests run against *Azure*: then they
  read ``AZURE_KEYVAULT_URL`` and credentials from the environment and run only the default API
  version, to save Azure time. Against keyless every API version runs, and the vault and the
  credential come from here.
- ``AzureRecordedTestCase.is_live`` answers True: the tests talk to a live server and wait
  where live tests wait. Upstream's conftest replaces ``time.sleep``/``asyncio.sleep`` with
  no-ops for the session when ``is_live()`` is False; :func:`recorded_by_proxy` puts real sleeps
  back for each test, shortened by :mod:`keyless_sleeps`.
- The preparers' clients are pointed at a keyless vault made for the test class
  (:mod:`keyless_vaults`), with a WorkloadIdentityCredential that exchanges the federated token
  of ``AZURE_FEDERATED_TOKEN_FILE`` at keyless's token endpoint (``AZURE_AUTHORITY_HOST``);
  they log HTTP (``logging_enable=True``) unless a test turns it off, as upstream's
  ``create_client_from_credential`` builds them (the logging tests depend on it).
- The sanitizer and matcher calls configure recordings; there are none, so they do nothing.
"""

from __future__ import annotations

import asyncio
import functools
import os
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import keyless_sleeps
import keyless_vaults
import pytest

# Credentials (and async clients) a test opened, closed when it ends (the upstream tests leave
# async clients open; an unclosed aiohttp session is only a warning, but it is a leak).
_opened: list[Any] = []


def is_live() -> bool:
    """Whether the tests run against Azure: never here (see the module docstring)."""
    return False


def is_live_and_not_recording() -> bool:
    return False


@pytest.fixture(scope="session")
def test_proxy() -> Iterator[None]:
    """Upstream starts the recording proxy here; nothing is recorded against keyless."""
    yield None


def _no_recording(*_: Any, **__: Any) -> None:
    """Recording sanitizers and matchers: there are no recordings to sanitize or match."""


add_oauth_response_sanitizer = _no_recording
add_general_regex_sanitizer = _no_recording
add_general_string_sanitizer = _no_recording
add_body_key_sanitizer = _no_recording
add_header_regex_sanitizer = _no_recording
add_remove_header_sanitizer = _no_recording
add_uri_regex_sanitizer = _no_recording
remove_batch_sanitizers = _no_recording
set_custom_default_matcher = _no_recording
set_default_session_settings = _no_recording
set_bodiless_matcher = _no_recording


def get_resource_name(name_prefix: str, identifier: bytes) -> str:
    """Upstream's: the prefix and a checksum of the test's id (one name per test and API
    version, the same on every run)."""
    checksum = zlib.adler32(identifier) & 0xFFFFFFFF
    return f"{name_prefix}{checksum:x}"


class AzureRecordedTestCase:
    """The base of upstream's test classes and client preparers."""

    @property
    def is_live(self) -> bool:
        return True

    @property
    def is_playback(self) -> bool:
        return False

    @property
    def in_recording(self) -> bool:
        return False

    def create_random_name(self, name: str) -> str:
        return get_resource_name(name, os.environ["PYTEST_CURRENT_TEST"].encode())

    def get_resource_name(self, name: str) -> str:
        return self.create_random_name(name)

    def get_credential(self, client_class: Any, **kwargs: Any) -> Any:
        """A WorkloadIdentityCredential configured by the environment the runner sets:
        ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and
        ``AZURE_AUTHORITY_HOST`` (keyless's token endpoint)."""
        if kwargs.get("is_async"):
            from azure.identity.aio import WorkloadIdentityCredential as AsyncCredential

            credential: Any = AsyncCredential()
        else:
            from azure.identity import WorkloadIdentityCredential

            credential = WorkloadIdentityCredential()
        _opened.append(credential)
        return credential

    def create_client_from_credential(
        self, client_class: Any, credential: Any, **kwargs: Any
    ) -> Any:
        """The client, its vault URL replaced by the keyless vault of the running test's class
        (the preparers name Azure's placeholder ``https://vaultname.vault.azure.net``), with
        HTTP logging on unless the test turns it off, as upstream's harness builds it."""
        if "vault_url" in kwargs:
            kwargs["vault_url"] = keyless_vaults.for_current_test()
        kwargs.setdefault("logging_enable", True)
        client = client_class(credential=credential, **kwargs)
        if asyncio.iscoroutinefunction(getattr(client, "close", None)):
            _opened.append(client)
        return client

    def fail(self, message: str) -> None:
        """unittest's ``fail``, which upstream's polling helpers call."""
        pytest.fail(message)

    @staticmethod
    def await_prepared_test(test_fn: Callable[..., Any]) -> Callable[..., Any]:
        """Runs an async test (with its preparers) to completion on an event loop of its own."""

        @functools.wraps(test_fn)
        def run(test_class_instance: Any, *args: Any, **kwargs: Any) -> Any:
            return asyncio.run(test_fn(test_class_instance, *args, **kwargs))

        return run


def recorded_by_proxy(test_func: Callable[..., Any]) -> Callable[..., Any]:
    """Upstream records or replays here; against keyless it runs the test with real (shortened)
    sleeps and closes the credentials the test opened."""

    @functools.wraps(test_func)
    def record_wrap(*args: Any, **kwargs: Any) -> Any:
        try:
            with keyless_sleeps.shortened():
                return test_func(*args, **kwargs)
        finally:
            close_opened()

    return record_wrap


def close_opened() -> None:
    while _opened:
        thing = _opened.pop()
        if not asyncio.iscoroutinefunction(getattr(thing, "close", None)):
            thing.close()


async def close_opened_async() -> None:
    while _opened:
        thing = _opened.pop()
        result = thing.close()
        if asyncio.iscoroutine(result):
            await result
