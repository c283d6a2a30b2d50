"""PACS credentials: from environment variables or a 0600 file, never from flags; never logged.

``--auth basic`` reads ``MEDSEG_PACS_USER`` and ``MEDSEG_PACS_PASSWORD`` (or a file holding
``user:password`` on its first line); ``--auth bearer`` reads ``MEDSEG_PACS_TOKEN`` (or a file
holding the token). ``auto`` (the default) picks bearer when the token variable is set, basic
when the user variable is, else no authentication. A credentials file must not be readable by
group or others (``chmod 600``).
"""

from __future__ import annotations

import base64
import enum
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from medseg.pacs.errors import PacsAuthError
from medseg.pacs.redact import add_secret

ENV_USER = "MEDSEG_PACS_USER"
ENV_PASSWORD = "MEDSEG_PACS_PASSWORD"
ENV_TOKEN = "MEDSEG_PACS_TOKEN"


class AuthKind(str, enum.Enum):
    """How to authenticate to the PACS; strings ``"auto"``, ``"none"``, ``"basic"``, ``"bearer"`` are accepted."""

    AUTO = "auto"
    NONE = "none"
    BASIC = "basic"
    BEARER = "bearer"

    @classmethod
    def coerce(cls, value: "AuthKind | str") -> "AuthKind":
        try:
            return cls(str(getattr(value, "value", value)).lower())
        except ValueError:
            raise PacsAuthError(f"unknown --auth {value!r}; known: {', '.join(k.value for k in cls)}") from None


@dataclass(frozen=True)
class Credentials:
    """Resolved credentials; the secret never appears in ``repr``."""

    kind: AuthKind
    user: str = ""
    secret: str = field(default="", repr=False)
    source: str = ""  # where they came from (a variable name or a file path), for messages

    def header(self) -> dict[str, str]:
        """The ``Authorization`` header (empty for no authentication)."""
        if self.kind is AuthKind.BASIC:
            token = base64.b64encode(f"{self.user}:{self.secret}".encode()).decode("ascii")
            add_secret(token)
            return {"Authorization": f"Basic {token}"}
        if self.kind is AuthKind.BEARER:
            return {"Authorization": f"Bearer {self.secret}"}
        return {}


def _read_file(path: Path) -> str:
    try:
        info = path.stat()
    except OSError as exc:
        raise PacsAuthError(f"credentials file {path}: cannot read it ({exc.strerror})") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PacsAuthError(
            f"credentials file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run chmod 600 {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].strip():
        raise PacsAuthError(f"credentials file {path} is empty")
    return lines[0].strip()


def load_credentials(kind: AuthKind | str = AuthKind.AUTO, auth_file: str | os.PathLike[str] | None = None,
                     *, environ: dict[str, str] | None = None) -> Credentials:
    """Resolve credentials of ``kind`` from ``auth_file`` or the environment (read afresh on each call).

    Raises:
        PacsAuthError: the kind asks for credentials that are not set, the file is not 0600,
            or a basic file line lacks ``user:password``.
    """
    env = os.environ if environ is None else environ
    kind = AuthKind.coerce(kind)
    if kind is AuthKind.AUTO:
        if auth_file is not None:
            raise PacsAuthError("--auth-file needs --auth basic or --auth bearer")
        kind = AuthKind.BEARER if env.get(ENV_TOKEN) else AuthKind.BASIC if env.get(ENV_USER) else AuthKind.NONE
    if kind is AuthKind.NONE:
        return Credentials(AuthKind.NONE)
    if auth_file is not None:
        path = Path(auth_file)
        text = _read_file(path)
        if kind is AuthKind.BEARER:
            add_secret(text)
            return Credentials(kind, secret=text, source=str(path))
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise PacsAuthError(f"credentials file {path}: the first line must be user:password")
        add_secret(password)
        return Credentials(kind, user=user, secret=password, source=str(path))
    if kind is AuthKind.BEARER:
        token = env.get(ENV_TOKEN, "")
        if not token:
            raise PacsAuthError(f"--auth bearer: set {ENV_TOKEN} or pass --auth-file (a 0600 file holding the token)")
        add_secret(token)
        return Credentials(kind, secret=token, source=ENV_TOKEN)
    user, password = env.get(ENV_USER, ""), env.get(ENV_PASSWORD, "")
    if not user or not password:
        raise PacsAuthError(f"--auth basic: set {ENV_USER} and {ENV_PASSWORD}, or pass --auth-file "
                            "(a 0600 file holding user:password)")
    add_secret(password)
    return Credentials(kind, user=user, secret=password, source=f"{ENV_USER}/{ENV_PASSWORD}")


__all__ = ["AuthKind", "Credentials", "load_credentials", "ENV_USER", "ENV_PASSWORD", "ENV_TOKEN"]
