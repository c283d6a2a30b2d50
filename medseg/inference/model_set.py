"""A model set: several models whose label maps merge into one (how TotalSegmentator builds 117 classes
from five nnU-Net models). The set is a :class:`~medseg.inference.segmenter.Segmenter` itself.

Labels are renumbered in the declared order: the members' foreground labels, member by member,
in their own value order, take the values 1, 2, ...; a name that two members share keeps one
value. Where two members label the same voxel the overlap rule decides: ``"first"`` (the
earlier member keeps it) or ``"last"`` (the later member overwrites it).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError, ModelError
from medseg.volume import Volume

PathLike = str | os.PathLike[str]
FAMILY = "model_set"
OVERLAP_RULES = ("first", "last")


def merged_labels(members: Sequence[dict[int, str]]) -> tuple[dict[int, str], list[dict[int, int]]]:
    """``({value: name} of the set, per member {its value: set value})`` in the declared order.

    Example:
        >>> merged_labels([{0: "background", 1: "liver"}, {0: "background", 1: "kidney", 2: "liver"}])
        ({0: 'background', 1: 'liver', 2: 'kidney'}, [{1: 1}, {1: 2, 2: 1}])
    """
    names: dict[int, str] = {0: "background"}
    by_name: dict[str, int] = {}
    maps = []
    for labels in members:
        lut = {}
        for value, name in sorted(labels.items()):
            if value == 0:
                continue
            if name not in by_name:
                by_name[name] = len(names)
                names[by_name[name]] = name
            lut[int(value)] = by_name[name]
        maps.append(lut)
    return names, maps


def write_model_set(models: Sequence[PathLike], output: PathLike, *, overlap: str = "first") -> Path:
    """Write a model-set export (``model.json`` naming the members by absolute path; no weights of its own)."""
    from medseg.inference.factory import load_segmenter
    from medseg.models.export import ModelExport, save_export

    if overlap not in OVERLAP_RULES:
        raise ConfigError(f"--overlap {overlap!r} unknown; choose from {', '.join(OVERLAP_RULES)}")
    if len(models) < 2:
        raise ConfigError("a model set needs at least two models")
    members = [load_segmenter(m, device="cpu") for m in models]
    names, maps = merged_labels([dict(m.label_names) for m in members])
    export = ModelExport(
        name=FAMILY, config={"members": [{"path": str(Path(p).resolve()), "model_sha256": m.model_sha256,
                                          "labels": {str(k): v for k, v in lut.items()}}
                                         for p, m, lut in zip(models, members, maps)], "overlap": overlap},
        spatial_dims=3, labels=names, preprocessing={"kind": "model_set"}, inference={})
    return save_export(output, {}, export)


class ModelSet:
    """Members run one after another on each volume; their label maps merge by the declared order and rule."""

    def __init__(self, members: Sequence[Any], maps: Sequence[dict[int, int]], *, overlap: str = "first",
                 label_names: dict[int, str] | None = None) -> None:
        if overlap not in OVERLAP_RULES:
            raise ConfigError(f"overlap rule {overlap!r} unknown; choose from {', '.join(OVERLAP_RULES)}")
        self.members = list(members)
        self.maps = [dict(m) for m in maps]
        self.overlap = overlap
        self.label_names = label_names or merged_labels([dict(m.label_names) for m in self.members])[0]
        self.model_sha256 = hashlib.sha256("+".join(m.model_sha256 for m in self.members).encode()).hexdigest()
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_path(cls, path: PathLike, *, device: str | None = None, tta: bool = False) -> "ModelSet":
        """Load a model-set export: every member once (each with ``device``/``tta``)."""
        from medseg.inference.factory import load_segmenter
        from medseg.models.export import read_export

        export = read_export(path)
        members = [load_segmenter(m["path"], device=device, tta=tta) for m in export.config["members"]]
        for recorded, member in zip(export.config["members"], members):
            if recorded.get("model_sha256") and recorded["model_sha256"] != member.model_sha256:
                raise ModelError(f"{path}: member {recorded['path']} changed since the model set was made "
                                 "(other weights); make the set again with `medseg import model-set`")
        maps = [{int(k): int(v) for k, v in m["labels"].items()} for m in export.config["members"]]
        return cls(members, maps, overlap=export.config.get("overlap", "first"), label_names=export.labels)

    def predict(self, volume: Volume, **options: Any) -> Volume:
        """The merged label map on ``volume``'s grid (``uint8``, ``uint16`` beyond 255 labels)."""
        if options.get("return_probabilities"):
            raise InputError("a model set writes labels only (no class probabilities)")
        options.pop("return_probabilities", None)
        t0 = time.perf_counter()
        dtype = np.uint8 if max(self.label_names) < 256 else np.uint16
        out = np.zeros(volume.spatial_shape, dtype=dtype)
        timings: dict[str, float] = {}
        for i, (member, lut) in enumerate(zip(self.members, self.maps)):
            labels = np.asarray(member.predict(volume).array)
            table = np.zeros(max(int(labels.max()), max(lut, default=0)) + 1, dtype=dtype)
            for src, dst in lut.items():
                table[src] = dst
            mapped = table[labels]
            where = mapped > 0 if self.overlap == "last" else (mapped > 0) & (out == 0)
            out[where] = mapped[where]
            for k, v in member.last_timings.items():
                timings[f"member{i}_{k}"] = v
        timings["total_s"] = time.perf_counter() - t0
        self.last_timings = timings
        meta = {**volume.meta, "prediction": {"model_sha256": self.model_sha256, "family": FAMILY,
                                              "label_names": {str(k): v for k, v in self.label_names.items()}}}
        return Volume(out, volume.affine.copy(), meta, is_label=True)


__all__ = ["ModelSet", "merged_labels", "write_model_set", "OVERLAP_RULES"]
