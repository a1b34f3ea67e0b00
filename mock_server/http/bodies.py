"""Reading request bodies: size limits, Content-Encoding, Content-Type, JSON.

The body is read from the stream with a running cap (`max_body_bytes`; 413 above it, before the
whole body is buffered) and decompressed here, not by aiohttp: the server runs with
`auto_decompress=False`, because aiohttp on Python < 3.14 cannot decode zstd without
`backports.zstd` and answers a body-carrying 400 the SDK does not retry (spec WIRE-8).
zstd output is capped too (`max_decompressed_bytes`), so a decompression bomb is a 413, not an
out-of-memory. If the server *was* started with aiohttp's decompression on, a body that no longer
starts with the zstd magic bytes has been decoded already and is taken as is.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from typing import Any

import zstandard
from aiohttp import web

from mock_server.service.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
JSON = "application/json"
PROTOBUF = "application/x-protobuf"


async def read_body(request: web.Request, max_bytes: int, max_decompressed: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(
            f"body of {request.content_length} bytes exceeds the {max_bytes}-byte limit", "body"
        )
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"body exceeds the {max_bytes}-byte limit", "body")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return bytes(body)
    if encoding == "zstd":
        if not body.startswith(ZSTD_MAGIC):
            return bytes(body)  # aiohttp decompressed it already
        return _unzstd(bytes(body), max_decompressed)
    if encoding == "gzip":
        if not body.startswith(GZIP_MAGIC):
            return bytes(body)
        return _gunzip(bytes(body), max_decompressed)
    raise UnsupportedMediaType(
        f"Content-Encoding {encoding!r} is not supported; send zstd, gzip or identity",
        "Content-Encoding",
    )


def _unzstd(data: bytes, cap: int) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(data), read_across_frames=True
        )
        out = reader.read(cap + 1)  # one byte past the cap tells "too large" from "exactly cap"
        if len(out) > cap:
            raise PayloadTooLarge(
                f"zstd body decompresses to more than the {cap}-byte limit", "body"
            )
        return bytes(out)
    except zstandard.ZstdError as exc:
        raise MalformedRequest(f"body is not valid zstd: {exc}", "body") from exc


def _gunzip(data: bytes, cap: int) -> bytes:
    try:
        decoder = zlib.decompressobj(wbits=31)
        out = decoder.decompress(data, cap + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"body is not valid gzip: {exc}", "body") from exc
    if len(out) > cap:
        raise PayloadTooLarge(f"gzip body decompresses to more than the {cap}-byte limit", "body")
    return out


def media_type(request: web.Request) -> str | None:
    """The Content-Type without parameters, lower-cased; None when absent."""
    if "Content-Type" not in request.headers:
        return None
    return request.content_type.lower()


def require_media_type(request: web.Request, *accepted: str) -> str:
    """The request's media type if accepted; a missing Content-Type counts as the first."""
    found = media_type(request)
    if found is None:
        return accepted[0]
    if found not in accepted:
        raise UnsupportedMediaType(
            f"Content-Type {found!r} is not accepted here; send {' or '.join(accepted)}",
            "Content-Type",
        )
    return found


def parse_json(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}", "body") from exc
    if _SURROGATE_ESCAPE.search(body):
        _check_text(value)  # rare: only bodies that spell a surrogate as an escape
    return value


# JSON may escape a lone UTF-16 surrogate ("\ud800"); Python decodes it into a str that no
# encoder, digest or file name accepts, so such text is refused here, at the boundary.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedRequest(f"text holds a lone surrogate: {exc}", "body") from exc
    elif isinstance(value, list):
        for item in value:
            _check_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
