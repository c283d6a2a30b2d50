"""A MONAI bundle as a medseg segmenter: the bundle's network and preprocessing, medseg's windowing.

The input :class:`~medseg.Volume` becomes the channel-first ``MetaTensor`` that the bundle's
``LoadImaged`` + ``EnsureChannelFirstd`` would make of the same file (array ``[1, i, j, k]``,
affine voxel->RAS mm), so those two transforms are skipped and the rest of the bundle's
``preprocessing`` runs as written (orientation, spacing, intensity). The network's outputs
are blended by medseg's sliding window (the bundle's ``roi_size``/``overlap``/``mode``),
reduced to labels on the model grid, and mapped back onto the input's exact grid by
nearest neighbour through the preprocessed image's affine.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.volume import Volume

PathLike = str | os.PathLike[str]
_LOADERS = ("LoadImage", "EnsureChannelFirst")


def _is_loader(transform: Any) -> bool:
    name = type(transform).__name__
    return any(name in (n, n + "d") for n in _LOADERS)


class BundleSegmenter:
    """A MONAI bundle imported by ``medseg import monai-bundle``.

    Attributes:
        last_timings: ``preprocess_s``, ``network_s`` (sliding window), ``to_input_grid_s``, ``total_s``.
    """

    def __init__(self, export: Any, state: dict[str, Any], *, device: str | None = None, tta: bool = False) -> None:
        import torch

        from medseg.models.export import load_state_exactly
        from medseg.models.monai_bundle import build

        self.export = export
        from medseg.models.export import resolve_device

        self.device = torch.device(resolve_device(device))
        net, pre = build(export.config, device=str(self.device))
        load_state_exactly(net, state, where="model.pt: weights do not fit network_def")
        self.network = net.to(self.device).eval()
        transforms = list(getattr(pre, "transforms", [pre]))
        self.keys = self._image_key(transforms)
        from monai.transforms import Compose

        self.preprocessing = Compose([t for t in transforms if not _is_loader(t)])
        self.tta = bool(tta)
        self.model_sha256 = export.sha256
        self.last_timings: dict[str, float] = {}

    @staticmethod
    def _image_key(transforms: list[Any]) -> str:
        for t in transforms:
            keys = getattr(t, "keys", None)
            if keys:
                return str(keys[0])
        return "image"

    @classmethod
    def from_path(cls, path: PathLike, *, device: str | None = None, tta: bool = False) -> "BundleSegmenter":
        """Load a medseg export made from a bundle (``medseg import monai-bundle``)."""
        from medseg.io.atomic import sha256_file
        from medseg.models.export import WEIGHTS_NAME, find_export, read_export
        from medseg.models.monai_bundle import FAMILY, load_weights

        folder = find_export(path)
        export = read_export(folder)
        if export.name != FAMILY:
            raise InputError(f"{folder}: model family {export.name!r}, not {FAMILY!r}")
        if export.sha256 and sha256_file(folder / WEIGHTS_NAME) != export.sha256:
            raise InputError(f"{folder / WEIGHTS_NAME}: SHA-256 does not match model.json")
        return cls(export, load_weights(folder / WEIGHTS_NAME), device=device, tta=tta)

    @property
    def label_names(self) -> dict[int, str]:
        """``{channel: name}`` from the bundle's ``metadata.json`` (``channel_def``)."""
        return dict(self.export.labels)

    def preprocess(self, volume: Volume) -> Any:
        """The bundle's preprocessing of ``volume``: a ``MetaTensor`` ``[C, X, Y, Z]`` with its affine."""
        import torch
        from monai.data import MetaTensor

        arr = volume.array if volume.channel_first else volume.array[None]
        image = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)),
                           affine=torch.as_tensor(volume.affine, dtype=torch.float64))
        return self.preprocessing({self.keys: image})[self.keys]

    def predict(self, volume: Volume, *, return_probabilities: bool = False) -> Any:
        """Labels of ``volume`` on its exact grid (argmax of the blended network outputs)."""
        import torch

        from medseg.inference.grid import labels_to_grid
        from medseg.inference.sliding_window import argmax_channels, iter_slabs

        if return_probabilities:
            raise InputError("a MONAI bundle segmenter writes labels only (no --probabilities)")
        t0 = time.perf_counter()
        pre = self.preprocess(volume)
        affine = np.asarray(pre.affine, dtype=np.float64)
        image = pre.as_tensor().to(self.device, dtype=torch.float32)
        t1 = time.perf_counter()
        inf = self.export.inference
        labels = np.empty(tuple(image.shape[1:]), dtype=np.uint8)

        def window_fn(x: Any) -> Any:
            out = self.network(x)
            if self.tta:
                for dims in ((2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)):
                    out = out + torch.flip(self.network(torch.flip(x, dims)), dims)
                out = out / 8
            return out

        with torch.inference_mode():
            for z0, z1, seg in iter_slabs(image, window_fn, inf["patch_size"], overlap=inf.get("overlap", 0.25),
                                          batch_size=int(inf.get("batch_size", 1)), mode=inf.get("mode", "constant"),
                                          device=self.device, normalize=True):
                labels[..., z0:z1] = argmax_channels(seg).cpu().numpy()
        t2 = time.perf_counter()
        out = labels_to_grid(labels, affine, volume.spatial_shape, volume.affine)
        t3 = time.perf_counter()
        self.last_timings = {"preprocess_s": t1 - t0, "network_s": t2 - t1, "to_input_grid_s": t3 - t2,
                             "total_s": t3 - t0}
        meta = {**volume.meta, "prediction": {"model_sha256": self.model_sha256, "family": "monai_bundle",
                                              "label_names": {str(k): v for k, v in self.label_names.items()}}}
        return Volume(out, volume.affine.copy(), meta, is_label=True)


__all__ = ["BundleSegmenter"]
