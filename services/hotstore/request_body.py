"""Reading request bodies: HTTP/1.1 chunked or sized, then decompressed frame by frame.

``clickhouse-connect`` streams inserts as a chunked body and compresses each block as its
own lz4 (or zstd) frame.  ``lz4.frame.decompress`` reads only the first frame and silently
drops the rest, so every decoder here restarts on ``unused_data`` until the body ends and
fails loudly on a truncated frame.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

import lz4.frame
import zstandard

from plantstream.services.hotstore.errors import BAD_ARGUMENTS, NOT_IMPLEMENTED, ClickHouseError

READ_SIZE = 1 << 20


class _FrameDecoder(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


def raw_chunks(rfile: BinaryIO, content_length: int | None, chunked: bool) -> Iterator[bytes]:
    """The body as it arrives on the socket (transfer encoding removed, content encoding kept)."""
    if chunked:
        yield from _dechunk(rfile)
        return
    remaining = content_length or 0
    while remaining > 0:
        data = rfile.read(min(READ_SIZE, remaining))
        if not data:
            raise ClickHouseError.own(BAD_ARGUMENTS, "Request body ended before Content-Length bytes")
        remaining -= len(data)
        yield data


def _dechunk(rfile: BinaryIO) -> Iterator[bytes]:
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise ClickHouseError.own(BAD_ARGUMENTS, "Malformed chunked request body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ClickHouseError.own(BAD_ARGUMENTS, "Malformed chunk size in request body") from None
        if size == 0:
            while rfile.readline(8192) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return
        remaining = size
        while remaining > 0:
            data = rfile.read(min(READ_SIZE, remaining))
            if not data:
                raise ClickHouseError.own(BAD_ARGUMENTS, "Request body ended inside a chunk")
            remaining -= len(data)
            yield data
        rfile.readline(16)  # the CRLF after the chunk data


def _gzip_decoder() -> zlib._Decompress:
    return zlib.decompressobj(wbits=47)  # gzip or zlib header, detected


def _deflate_decoder() -> zlib._Decompress:
    return zlib.decompressobj(wbits=15)


class _ZlibFrames:
    """zlib's decompressobj with the eof/unused_data interface the frame loop expects."""

    def __init__(self, factory: Callable[[], zlib._Decompress]) -> None:
        self._obj = factory()

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    def decompress(self, data: bytes) -> bytes:
        return self._obj.decompress(data)


_DECODERS: dict[str, Callable[[], _FrameDecoder]] = {
    "lz4": lz4.frame.LZ4FrameDecompressor,
    "zstd": lambda: zstandard.ZstdDecompressor().decompressobj(),
    "gzip": lambda: _ZlibFrames(_gzip_decoder),
    "x-gzip": lambda: _ZlibFrames(_gzip_decoder),
    "deflate": lambda: _ZlibFrames(_deflate_decoder),
}


def decoded_chunks(chunks: Iterator[bytes], content_encoding: str | None) -> Iterator[bytes]:
    """``chunks`` with the HTTP ``Content-Encoding`` removed; concatenated frames all decoded."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        yield from chunks
        return
    factory = _DECODERS.get(encoding)
    if factory is None:
        raise ClickHouseError.own(NOT_IMPLEMENTED, f"Unsupported Content-Encoding {encoding!r}")
    decoder = factory()
    in_frame = False
    for chunk in chunks:
        data = chunk
        while data:
            try:
                out = decoder.decompress(data)
            except Exception as exc:
                raise ClickHouseError.own(BAD_ARGUMENTS, f"Cannot decompress {encoding} body: {exc}") from None
            in_frame = True
            if out:
                yield out
            if decoder.eof:
                data = decoder.unused_data
                decoder = factory()
                in_frame = False
            else:
                data = b""
    if in_frame:
        raise ClickHouseError.own(BAD_ARGUMENTS, f"Truncated {encoding} body: the last frame is incomplete")


class BodyReader:
    """One request's decoded body, read on demand; knows whether the socket was drained."""

    def __init__(self, rfile: BinaryIO, content_length: int | None, chunked: bool, encoding: str | None) -> None:
        self._has_body = chunked or bool(content_length)
        self._chunks = decoded_chunks(raw_chunks(rfile, content_length, chunked), encoding)
        self.exhausted = not self._has_body

    def __iter__(self) -> Iterator[bytes]:
        if self.exhausted:
            return
        yield from self._chunks
        self.exhausted = True

    def read_all(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        for chunk in self:
            size += len(chunk)
            if size > limit:
                raise ClickHouseError.own(BAD_ARGUMENTS, f"Request body exceeds {limit} bytes for a non-INSERT query")
            parts.append(chunk)
        return b"".join(parts)
