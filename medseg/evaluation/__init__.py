"""Evaluation of folders of predictions against references: one room for volumes and images.

- :mod:`~medseg.evaluation.volumes`: ``evaluate_folder`` (NIfTI/NRRD/MHA/DICOM-SEG label maps,
  or a ``medseg batch`` output; per-case/label CSV, summary JSON, box plots) — ``medseg evaluate``;
- :mod:`~medseg.evaluation.images`: ``evaluate_image_folder`` (ordinary-image masks; dataset
  confusion -> mIoU/mDice/aAcc, per-image Dice/IoU/Boundary IoU) — ``medseg evaluate-images``.

Both score with :mod:`medseg.metrics` and write through the shared table writers
(:mod:`medseg.io.tables`) and charts (:mod:`medseg.plots.charts`). Submodules load on first use.
"""

from __future__ import annotations
