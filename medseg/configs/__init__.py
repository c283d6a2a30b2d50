"""The config parts shipped inside the package, found by name through ``importlib.resources``.

Pipelines name them instead of giving a path, so that a wheel install resolves them from
any folder::

    include: [models/unet3d_small, train/adamw]   # medseg/configs/models/unet3d_small.yaml, ...
    transforms:
      recipe: ct_3d                                # medseg/configs/transforms/ct_3d.yaml

Each kind is a folder of YAML files: ``models`` and ``train`` hold config parts merged by
``include:``, ``transforms`` holds the MONAI recipes of :mod:`medseg.transforms.recipes`.
Standard library only: it sits below every room that reads a config.

>>> "ct_3d" in part_names("transforms")
True
>>> part_path("models", "unet3d_small").name
'unet3d_small.yaml'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from medseg.errors import ConfigError

KINDS = ("models", "train", "transforms")
SUFFIX = ".yaml"


def _folder(kind: str) -> Path:
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}; known: {', '.join(KINDS)}")
    # a regular (not zipped) install: the package folder is a real directory
    return Path(str(resources.files(__name__).joinpath(kind)))


def part_names(kind: str) -> list[str]:
    """Names of the shipped parts of one kind (``models``, ``train`` or ``transforms``), sorted."""
    return sorted(p.name[: -len(SUFFIX)] for p in _folder(kind).iterdir() if p.name.endswith(SUFFIX))


def part_path(kind: str, name: str) -> Path:
    """The file of a shipped part, e.g. ``part_path("transforms", "ct_3d")``.

    Raises:
        ConfigError: naming the kind and listing the known names.
    """
    path = _folder(kind) / f"{name}{SUFFIX}"
    if not path.is_file():
        raise ConfigError(f"no shipped {kind} config {name!r}; known: {', '.join(part_names(kind))}")
    return path


def resolve_part(reference: str) -> Path:
    """A shipped part named ``KIND/NAME`` (``models/unet3d``; a ``.yaml`` suffix is allowed).

    Raises:
        ConfigError: when the kind or the name is unknown, listing the known ones.
    """
    kind, sep, name = reference.strip().partition("/")
    if name.endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    if not sep or not name or "/" in name:
        known = ", ".join(f"{k}/{n}" for k in KINDS for n in part_names(k))
        raise ConfigError(f"config part {reference!r}: expected KIND/NAME; known: {known}")
    return part_path(kind, name)


__all__ = ["KINDS", "part_names", "part_path", "resolve_part"]
