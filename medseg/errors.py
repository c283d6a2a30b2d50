"""Error types raised by medseg.

Every user-facing problem is raised as a subclass of :class:`MedsegError` with a
message that names the file, the series and the exact problem, so that a batch
run can record it and move on.
"""

from __future__ import annotations


class MedsegError(Exception):
    """Base class of every error medseg raises on purpose."""


class InputError(MedsegError, ValueError):
    """Bad input data: unreadable, corrupt, inconsistent geometry, wrong shape.

    Also a :class:`ValueError`, so generic ``except ValueError`` handlers catch it.
    """


class ConfigError(MedsegError, ValueError):
    """A configuration value is missing, unknown or out of range (names the key)."""


class ModelError(MedsegError):
    """A model cannot be built or its weights do not fit the architecture."""


class OutputError(MedsegError):
    """An output could not be written (the message names the format and the reason); outputs
    of the other formats that were written correctly are kept and recorded."""


__all__ = ["MedsegError", "InputError", "ConfigError", "ModelError", "OutputError"]
