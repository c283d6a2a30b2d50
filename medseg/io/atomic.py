"""Atomic file writes (temporary name in the target folder, then rename) and file checksums.

A crash or kill never leaves a half-written file under the final name. Files get the
permissions every other tool gives them, ``0o666 & ~umask`` (``tempfile.mkstemp`` alone
would leave them ``0600``, unreadable to the group sharing a project folder).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import OutputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting and
    restoring it under a lock (``os.umask`` has no read-only form).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


#: errno values of a write that no retry fixes: read-only file system, disk full, quota, permissions
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}


class WriteError(OutputError, OSError):
    """A file could not be written (read-only folder, disk full, no permission): a medseg error with one
    line naming the path, and still an ``OSError`` for callers that catch those."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``exc`` as a :class:`WriteError` naming ``path`` when its errno is one of the unfixable ones."""
    if isinstance(exc, WriteError) or exc.errno not in _WRITE_ERRNOS:
        return exc
    what = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
            errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}.get(exc.errno or 0, "permission denied")
    err = WriteError(exc.errno, f"{path}: cannot write ({what})")
    return err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary name keeps the full suffix (``.nii.gz``) so that libraries that
    choose the format from the extension still work. On error the temporary file
    is removed and the final path is left untouched.

    Args:
        path: the final file.
        mode: permission bits of the final file; default ``0o666 & ~umask``, as
            ``open()`` would give (pass ``0o600`` for a file only the owner may read).
    """
    final = Path(path)
    suffix = "".join(final.suffixes) or ".tmp"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".partial{suffix}", dir=final.parent)
    except OSError as exc:
        raise write_error(exc, final) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, (0o666 & ~current_umask()) if mode is None else mode)
        os.replace(tmp, final)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise write_error(exc, final) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (read in ``chunk``-byte blocks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["atomic_path", "WriteError", "write_error", "current_umask", "write_bytes_atomic", "write_text_atomic", "sha256_file"]
