"""The Predictor: load an exported model once, segment any number of volumes.

For each input :class:`~medseg.Volume` (any orientation, oblique included):

1. preprocessing exactly as in training (``medseg.transforms.preprocess``, from the
   ``preprocessing`` section of ``model.json``): canonical orientation (axis flips and
   permutations only), resampling to the target spacing, intensity normalisation;
2. sliding-window inference with Gaussian blending (``inference`` section: patch size,
   overlap, windows per batch), optional mirror test-time augmentation, optional ensemble
   of several models (softmax probabilities averaged); class scores live only one window
   deep at a time and are reduced to labels slab by slab;
3. per-label post-processing (``postprocessing`` section) on the model grid, sizes in mm³
   from the model grid's spacing;
4. labels mapped back to the input grid by nearest neighbour (one index gather).

The returned label Volume has exactly the input's spatial shape and affine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError, ModelError
from medseg.volume import Volume

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _default_device() -> str:
    from medseg.models.export import resolve_device

    return resolve_device(None)


class Predictor:
    """A loaded model (or ensemble) ready to segment volumes.

    Build it with :meth:`from_run`; then call :meth:`predict` for every study.

    Attributes:
        info: the ``model.json`` of the (first) model.
        device: torch device the networks run on.
        tta: mirror test-time augmentation on.
        last_timings: seconds spent in each stage of the last :meth:`predict` call
            (``preprocess_s``, ``network_s`` (the window function: forward passes, softmax,
            TTA flips, ensemble averaging), ``sliding_window_s`` (window extraction, blending
            and argmax, network included), ``postprocess_s``, ``to_input_grid_s``, ``total_s``;
            ``probabilities_s`` when asked).
    """

    def __init__(
        self,
        models: Sequence[Any],
        infos: Sequence[dict[str, Any]],
        *,
        device: str | Any = "cpu",
        tta: bool = False,
        sources: Sequence[PathLike] = (),
    ) -> None:
        if not models or len(models) != len(infos):
            raise ModelError("a Predictor needs at least one model and one model.json per model")
        _check_compatible(infos, sources)
        self.models = list(models)
        self.infos = list(infos)
        self.info = self.infos[0]
        self.device = device
        self.tta = bool(tta)
        self.sources = [Path(s) for s in sources]
        self.last_timings: dict[str, float] = {}
        from medseg.inference.postprocess import parse_rules

        self._rules = parse_rules(self.info.get("postprocessing"), where="model.json postprocessing")
        self._window_fn = None
        self._check_patch_contract()

    def _check_patch_contract(self) -> None:
        """``inference.patch_size`` must respect the input multiple the model family declares."""
        from medseg.models.registry import get_model_spec

        model = self.info["model"]
        patch = [int(p) for p in self.info.get("inference", {}).get("patch_size", [])][: self.spatial_dims]
        where = f"{self.sources[0] if self.sources else 'model.json'}: model.json inference.patch_size"
        if len(patch) == self.spatial_dims:
            get_model_spec(model["name"]).check_size(patch, model.get("config", {}), what=where)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_run(
        cls,
        path_or_paths: PathLike | Sequence[PathLike],
        *,
        device: str | None = None,
        tta: bool = False,
    ) -> "Predictor":
        """Load one exported model, or several (an ensemble, probabilities averaged).

        Args:
            path_or_paths: ``RUN_DIR``, ``RUN_DIR/export`` or a ``model.json`` path; a list
                of them for an ensemble (all must share labels, spatial dims,
                preprocessing and patch size).
            device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; default CUDA when available.
            tta: mirror test-time augmentation (8 flips in 3D, 4 in 2D).

        Raises:
            InputError: no export at a path. ModelError: bad weights/checksum or
            incompatible ensemble members.
        """
        from medseg.models.export import load_exported, read_info

        paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
        if not paths:
            raise InputError("Predictor.from_run needs at least one model path")
        device = device or _default_device()
        models, infos = [], []
        for p in paths:
            if read_info(p)["inference"].get("mode") == "prompted":
                raise ModelError(f"{p} is a promptable SAM2 model: segment with medseg.inference.factory.load_segmenter "
                                 "(prompt model or prompt label maps), medseg.inference.sam2.Sam2Refiner or `medseg sam2 segment`")
            model, info = load_exported(p, device=device)
            models.append(model)
            infos.append(info)
        log.info("loaded %d model(s) on %s: %s", len(models), device, ", ".join(str(p) for p in paths))
        return cls(models, infos, device=device, tta=tta, sources=paths)

    # -- description -----------------------------------------------------------------
    @property
    def label_names(self) -> dict[int, str]:
        """``{label value: name}`` from ``model.json`` (background included)."""
        return {int(k): str(v) for k, v in self.info["labels"].items()}

    @property
    def num_classes(self) -> int:
        """Number of output channels (max label value + 1)."""
        cfg = self.info["model"].get("config", {})
        n = cfg.get("out_channels") or cfg.get("num_classes") or cfg.get("classes")
        return int(n) if n else max(self.label_names) + 1

    @property
    def spatial_dims(self) -> int:
        """2 (slice by slice along the third canonical axis) or 3."""
        return int(self.info["spatial_dims"])

    @property
    def model_sha256(self) -> str:
        """SHA-256 of ``model.pt``; for an ensemble, SHA-256 of the members' hashes joined by ``+``."""
        hashes = [str(i.get("sha256", "")) for i in self.infos]
        if len(hashes) == 1:
            return hashes[0]
        return hashlib.sha256("+".join(hashes).encode()).hexdigest()

    # -- prediction ------------------------------------------------------------------
    def predict(self, volume: Volume, *, return_probabilities: bool = False) -> Any:
        """Segment ``volume``; the result lies on exactly the input grid.

        Args:
            volume: a 3D image ``[i, j, k]`` (or ``[c, i, j, k]`` for multi-channel models),
                any orientation, affine voxel->RAS+ mm.
            return_probabilities: also return class probabilities on the input grid.

        Returns:
            The label Volume (``uint8``, ``uint16`` beyond 255 labels; ``is_label``; same
            spatial shape and affine as ``volume``; ``meta["prediction"]`` records the
            model hash, label names and timings). With ``return_probabilities`` a tuple
            ``(labels, probabilities)`` where probabilities is a channel-first float32
            Volume ``[num_classes, i, j, k]`` on the same grid (this holds every class at
            full resolution: only ask for it when needed).

        Raises:
            InputError: a 2D volume, or a channel count the model does not take.
        """
        import torch

        from medseg.inference.grid import labels_to_grid, probabilities_to_grid
        from medseg.inference.postprocess import postprocess_labels
        from medseg.inference.sliding_window import argmax_channels, iter_slabs

        t_start = time.perf_counter()
        if volume.ndim != 3:
            raise InputError(f"{_name(volume)}: expected a 3D volume, got spatial shape {volume.spatial_shape}")
        pre = self._preprocess(volume)
        t_pre = time.perf_counter()

        image = torch.from_numpy(pre.array if pre.channel_first else pre.array[None])
        image = image.to(self.device)
        in_ch = self.info["model"].get("config", {}).get("in_channels")
        if in_ch is not None and image.shape[0] != int(in_ch):
            raise InputError(
                f"{_name(volume)}: the model takes {in_ch} channel(s), the image has {image.shape[0]}"
            )
        window_fn, network_time = self._timed_window_fn()
        patch, overlap, batch = self._window_settings(tuple(image.shape[1:]))
        n_classes = self.num_classes
        dtype = np.uint8 if n_classes <= 256 else np.uint16
        model_labels = np.empty(tuple(image.shape[1:]), dtype=dtype)
        probs = (
            torch.empty((n_classes, *image.shape[1:]), dtype=torch.float32, device="cpu")
            if return_probabilities else None
        )
        for z0, z1, seg in iter_slabs(
            image, window_fn, patch, overlap=overlap, batch_size=batch, device=self.device, normalize=probs is not None
        ):
            model_labels[..., z0:z1] = argmax_channels(seg).cpu().numpy()
            if probs is not None:
                probs[..., z0:z1] = seg.cpu()
        del image
        t_sw = time.perf_counter()

        # post-processing on the model grid: its cost does not grow with the input's resolution
        postprocess_labels(model_labels, self._rules, spacing_mm=pre.spacing)
        t_post = time.perf_counter()
        labels = labels_to_grid(model_labels, pre.affine, volume.spatial_shape, volume.affine)
        t_grid = time.perf_counter()

        timings = {
            "preprocess_s": t_pre - t_start,
            "network_s": network_time[0],
            "sliding_window_s": t_sw - t_pre,
            "postprocess_s": t_post - t_sw,
            "to_input_grid_s": t_grid - t_post,
        }
        prob_volume = None
        if probs is not None:
            p = probabilities_to_grid(probs.numpy(), pre.affine, volume.spatial_shape, volume.affine)
            prob_volume = Volume(p, volume.affine.copy(), {"kind": "probabilities"}, channel_first=True)
            timings["probabilities_s"] = time.perf_counter() - t_grid
        timings["total_s"] = time.perf_counter() - t_start
        self.last_timings = timings
        meta = {
            **{k: v for k, v in volume.meta.items() if k not in ("canonical_from", "resampled_from")},
            "prediction": {
                "model_sha256": self.model_sha256,
                "label_names": {str(k): v for k, v in self.label_names.items()},
                "tta": self.tta,
                "ensemble_size": len(self.models),
                "device": str(self.device),
                "timings": {k: round(v, 4) for k, v in timings.items()},
            },
        }
        result = Volume(labels, volume.affine.copy(), meta, is_label=True)
        log.debug("predicted %s in %.2f s (network %.2f s)", _name(volume), timings["total_s"], timings["network_s"])
        if return_probabilities:
            return result, prob_volume
        return result

    # -- internals -------------------------------------------------------------------
    def _preprocess(self, volume: Volume) -> Volume:
        from medseg.transforms.preprocess import preprocess_pair

        spec = dict(self.info.get("preprocessing", {}))
        spacing = spec.get("target_spacing_mm")
        if spacing is not None and len(spacing) == 2:  # 2D model: keep the slice spacing
            spec["target_spacing_mm"] = [*spacing, _slice_spacing(volume, spec.get("orientation") or "RAS")]
        if volume.array.dtype.kind not in "fiub":
            raise InputError(f"{_name(volume)}: cannot segment an image of dtype {volume.array.dtype}")
        image, _ = preprocess_pair(volume, None, spec)
        arr = np.ascontiguousarray(image.array, dtype=np.float32)
        return image.with_array(arr)

    def _window_settings(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], Any, int]:
        inf = self.info.get("inference", {})
        patch = [int(p) for p in inf.get("patch_size", [])]
        overlap = float(inf.get("overlap", 0.5))
        batch = int(inf.get("batch_size", 1))
        if self.spatial_dims == 3:
            if len(patch) != 3:
                raise ConfigError(f"model.json inference.patch_size must have 3 values for a 3D model, got {patch}")
            return tuple(patch), overlap, batch
        if len(patch) == 3:
            patch = patch[:2]
        if len(patch) != 2:
            raise ConfigError(f"model.json inference.patch_size must have 2 values for a 2D model, got {patch}")
        # 2D: windows of `batch` slices along the third axis, no overlap between slices
        depth = max(1, min(batch, shape[2]))
        return (patch[0], patch[1], depth), (overlap, overlap, 0.0), 1

    def _timed_window_fn(self) -> tuple[Any, list[float]]:
        import torch

        from medseg.inference.sliding_window import as_window_fn

        if self._window_fn is None:
            self._window_fn = as_window_fn(self.models, spatial_dims=self.spatial_dims, softmax=True, tta_flips=self.tta)
        inner = self._window_fn
        spent = [0.0]
        sync = str(self.device).startswith("cuda")

        def timed(windows: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            out = inner(windows)
            if sync:
                torch.cuda.synchronize()
            spent[0] += time.perf_counter() - t0
            return out

        return timed, spent


def _name(volume: Volume) -> str:
    return str(volume.meta.get("source") or volume.meta.get("series_uid") or "input volume")


def _slice_spacing(volume: Volume, orientation: str) -> float:
    """Spacing (mm) of the input axis that becomes the third axis in ``orientation``."""
    import nibabel.orientations as nio

    letter = orientation.upper()[2]
    world = next(a for a, pair in enumerate((("L", "R"), ("P", "A"), ("I", "S"))) if letter in pair)
    ornt = nio.io_orientation(volume.affine)
    axis = int(np.flatnonzero(ornt[:, 0] == world)[0])
    return float(volume.spacing[axis])


def _check_compatible(infos: Sequence[dict[str, Any]], sources: Sequence[PathLike]) -> None:
    first = infos[0]
    for i, other in enumerate(infos[1:], start=1):
        where = str(sources[i]) if i < len(sources) else f"model {i}"
        for key in ("labels", "spatial_dims", "preprocessing"):
            if other.get(key) != first.get(key):
                raise ModelError(f"{where}: ensemble members must share '{key}' ({other.get(key)!r} != {first.get(key)!r})")
        if other.get("inference", {}).get("patch_size") != first.get("inference", {}).get("patch_size"):
            raise ModelError(f"{where}: ensemble members must share inference.patch_size")


__all__ = ["Predictor"]
