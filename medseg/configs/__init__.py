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


#: the most nodes a config document may expand to once its aliases are followed
MAX_YAML_NODES = 200_000


def load_yaml_text(text: str, where: str) -> object:
    """Parse YAML with ``yaml.SafeLoader`` (no tags that build objects), refusing alias bombs.

    Anchors and aliases are allowed, but a document whose aliases expand to more than
    :data:`MAX_YAML_NODES` nodes (a "billion laughs" file of a few hundred bytes) is refused
    before anything is built from it, so it never costs more than a parse.

    Raises:
        ConfigError: not valid YAML, or expanding past the node limit (naming ``where``).

    Example:
        >>> load_yaml_text("a: &x [1, 2]\\nb: *x", "example")
        {'a': [1, 2], 'b': [1, 2]}
    """
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None
    if root is None:
        return None
    sizes: dict[int, int] = {}

    def expanded(node: yaml.Node) -> int:  # nodes after following aliases, memoised per shared node
        key = id(node)
        if key not in sizes:
            sizes[key] = 0  # a recursive alias counts as a leaf (SafeLoader builds it as a cycle)
            if isinstance(node, yaml.SequenceNode):
                total = 1 + sum(expanded(child) for child in node.value)
            elif isinstance(node, yaml.MappingNode):
                total = 1 + sum(expanded(k) + expanded(v) for k, v in node.value)
            else:
                total = 1
            sizes[key] = min(total, MAX_YAML_NODES + 1)
        return sizes[key]

    if expanded(root) > MAX_YAML_NODES:
        raise ConfigError(f"{where}: YAML aliases expand past {MAX_YAML_NODES} nodes; refused (an alias bomb?)")
    try:
        return yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None
