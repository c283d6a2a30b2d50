"""The one contract every model that segments studies fulfils: :class:`Segmenter`.

U-Net predictors and ensembles (:class:`~medseg.inference.predictor.Predictor`), SAM2
refiners prompted by a model or by label maps (:class:`~medseg.inference.sam2.Sam2Refiner`)
and every family added later implement it, so that ``medseg predict``, ``medseg batch``
and ``medseg sam2 segment`` write their outputs through one path
(:func:`medseg.inference.outputs.write_outputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from medseg.volume import Volume


@runtime_checkable
class Segmenter(Protocol):
    """Something that turns an image :class:`~medseg.Volume` into a label Volume on its grid.

    Attributes:
        label_names: ``{label value: name}``, background ``0`` included when the model has it.
        model_sha256: identifies the weights (and prompt source) that produced a result; a
            batch's ``--resume`` compares it.
        last_timings: seconds per stage of the last :meth:`predict` call (keys end in ``_s``).
    """

    label_names: Mapping[int, str]
    model_sha256: str
    last_timings: dict[str, float]

    def predict(self, volume: Volume, **options: Any) -> Any:
        """Labels of ``volume`` with exactly its spatial shape and affine.

        ``options`` are the segmenter's own (``return_probabilities`` for predictors that
        have class probabilities, ``prompt_labels`` for SAM2 prompted by a label map).
        """
        ...


def foreground_names(segmenter: Segmenter) -> dict[int, str]:
    """``{label value: name}`` of the segmenter's foreground labels (background 0 excluded).

    Example:
        >>> class S:
        ...     label_names = {0: "background", 1: "liver", 2: "spleen"}
        >>> foreground_names(S())
        {1: 'liver', 2: 'spleen'}
    """
    names = segmenter.label_names
    items = ((int(k), str(v)) for k, v in names.items()) if isinstance(names, Mapping) else enumerate(map(str, names))
    return {k: v for k, v in items if k != 0}


__all__ = ["Segmenter", "foreground_names"]
