"""Streaming ``multipart/related`` parser: parts go to files as they arrive, never whole into memory.

Parts are found by their boundaries (never by Content-Length); the boundary may be quoted or
not, and a delimiter may be split across network chunks. A body that ends before the closing
delimiter is truncated: the complete parts before it are kept, the partial one is deleted.
"""

from __future__ import annotations

import email.message
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medseg.pacs.errors import PacsError


class TruncatedMultipartError(PacsError):
    """The multipart body ended before its closing boundary."""


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a ``multipart/related`` Content-Type (quoted or not).

    >>> boundary_of('multipart/related; type="application/dicom"; boundary="ab:c d"')
    'ab:c d'
    >>> boundary_of('multipart/related; boundary=xyz123; type=application/dicom')
    'xyz123'
    """
    msg = email.message.Message()
    msg["Content-Type"] = content_type
    if msg.get_content_maintype() != "multipart":
        raise PacsError(f"expected a multipart answer, got Content-Type {content_type.split(';')[0]!r}")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise PacsError("the multipart answer has no usable boundary parameter")
    return boundary


@dataclass(frozen=True)
class Part:
    """One complete part: its headers (lower-case names) and the temporary file holding its body."""

    headers: dict[str, str]
    path: Path
    size: int


def _headers(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def iter_parts(chunks: Iterable[bytes], boundary: str, folder: str | os.PathLike[str]) -> Iterator[Part]:
    """Yield each part of a multipart body as soon as it is complete, written to a ``*.part`` file
    in ``folder``; the caller moves or deletes each file.

    Raises:
        TruncatedMultipartError: the body ended before the closing delimiter (after yielding the
            complete parts; the partial part's file is deleted).
    """
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    keep = len(delimiter) + 4
    buffer = b"\r\n"  # so that a first delimiter at the very start matches like the others
    state = "preamble"
    out = None
    out_path: Path | None = None
    size = 0
    headers: dict[str, str] = {}
    finished = False
    try:
        for chunk in _with_end(chunks):
            if chunk is None:
                break
            buffer += chunk
            while True:
                if state in ("preamble", "body"):
                    at = buffer.find(delimiter)
                    if at < 0:
                        if state == "body" and len(buffer) > keep:
                            out.write(buffer[:-keep])  # type: ignore[union-attr]
                            size += len(buffer) - keep
                            buffer = buffer[-keep:]
                        elif state == "preamble":
                            buffer = buffer[-keep:]
                        break
                    if state == "body":
                        out.write(buffer[:at])  # type: ignore[union-attr]
                        size += at
                        out.close()  # type: ignore[union-attr]
                        out = None
                        part = Part(headers, out_path, size)  # type: ignore[arg-type]
                        out_path = None
                        yield part
                    buffer = buffer[at + len(delimiter):]
                    state = "after_delimiter"
                if state == "after_delimiter":
                    if len(buffer) < 2:
                        break
                    if buffer[:2] == b"--":
                        finished = True
                        return
                    eol = buffer.find(b"\r\n")
                    if eol < 0:
                        break
                    buffer = buffer[eol + 2:]  # transport padding, then CRLF
                    state = "headers"
                if state == "headers":
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        if buffer.startswith(b"\r\n"):  # a part without headers
                            end, skip = 0, 2
                        elif len(buffer) > 65536:
                            raise PacsError("a multipart part has more than 64 KiB of headers")
                        else:
                            break
                    else:
                        skip = 4
                    headers = _headers(buffer[:end])
                    buffer = buffer[end + skip:]
                    fd, name = tempfile.mkstemp(suffix=".part", dir=folder)
                    out, out_path, size = os.fdopen(fd, "wb"), Path(name), 0
                    state = "body"
        raise TruncatedMultipartError(
            "the multipart answer ended before its closing boundary (truncated)"
            + (f" inside a part after {size} bytes" if state == "body" else ""))
    finally:
        if out is not None:
            out.close()
        if out_path is not None and not finished:
            out_path.unlink(missing_ok=True)


def _with_end(chunks: Iterable[bytes]) -> Iterator[bytes | None]:
    for chunk in chunks:
        if chunk:
            yield chunk
    yield None


__all__ = ["iter_parts", "boundary_of", "Part", "TruncatedMultipartError"]
