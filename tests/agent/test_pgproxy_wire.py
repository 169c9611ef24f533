"""The proxy's protocol parsers (agent/pgproxy_wire.py) under Hypothesis: what it writes it
reads back, and any bytes are either parsed or refused with ProtocolError, nothing else."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyless.agent import pgproxy_wire as wire

names = st.text(min_size=1, max_size=20).filter(lambda t: "\0" not in t)
values = st.text(max_size=40).filter(lambda t: "\0" not in t)


def read(data: bytes) -> wire.Startup:
    async def go() -> wire.Startup:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await wire.read_startup(reader)

    return asyncio.run(go())


@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(names, values, max_size=8))
def test_startup_message_reads_back(params: dict[str, str]) -> None:
    startup = read(wire.startup_message(params))
    assert startup.code == wire.PROTOCOL_3
    assert startup.parameters() == params


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200))
def test_any_startup_body_is_parsed_or_refused(body: bytes) -> None:
    try:
        parsed = wire.Startup(wire.PROTOCOL_3, body).parameters()
    except wire.ProtocolError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())


@settings(max_examples=100, deadline=None)
@given(sqlstate=st.from_regex(r"[0-9A-Z]{5}", fullmatch=True), text=values)
def test_error_response_reads_back(sqlstate: str, text: str) -> None:
    message = wire.error_response(sqlstate, text)
    assert message[:1] == b"E" and struct.unpack("!i", message[1:5])[0] == len(message) - 1
    fields = wire.error_fields(message[5:])
    assert (fields["C"], fields["M"], fields["S"]) == (sqlstate, text, "FATAL")


@pytest.mark.parametrize("length", [0, 7, wire.MAX_STARTUP + 1, -1])
def test_startup_lengths_out_of_bounds_are_refused(length: int) -> None:
    with pytest.raises(wire.ProtocolError):
        read(struct.pack("!ii", length, wire.PROTOCOL_3) + b"\0" * 16)
