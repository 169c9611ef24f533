"""Form bodies (urlencoded or multipart) read with a size cap; duplicates are refused."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request

from keyless.core import strictjson
from keyless.core.errors import InvalidRequest

MAX_FORM_BYTES = 64 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise InvalidRequest(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidRequest(f"request body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        # The client left, or the server's body timeout closed the connection: an expected
        # end, answered (to nobody) like any bad request, not logged as an internal error.
        raise InvalidRequest("the connection closed before the request body was complete") from exc
    return b"".join(chunks)


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    body = await read_body(request, limit)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    pairs: list[tuple[str, str]]
    if ctype == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=64,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidRequest("form body is not valid urlencoded UTF-8") from exc
    elif ctype == "multipart/form-data":
        request._body = body  # let Starlette's parser read the capped body
        try:
            form = await request.form(max_files=0, max_fields=64, max_part_size=limit)
        except Exception as exc:  # python-multipart raises several types
            raise InvalidRequest("multipart body cannot be parsed") from exc
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    else:
        raise InvalidRequest(
            "the request body must be application/x-www-form-urlencoded or multipart/form-data"
        )
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise InvalidRequest(f"parameter {key!r} is given more than once")
        fields[key] = value
    return fields


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object (strict: no duplicate keys, no NaN); an empty body is ``{}``.
    Raises ``strictjson.InvalidJson`` for anything else, for the dialect to word."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    return strictjson.loads_object(raw)


def required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise InvalidRequest(f"The request body must contain the following parameter: '{name}'.")
    return value
