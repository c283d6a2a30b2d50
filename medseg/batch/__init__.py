"""Batch inference over many studies: discovery, the manifest, local and Dask backends.

``run_batch(model, input_dir, output_dir, ...)`` is the entry point; ``medseg batch``
is its command line. Nothing heavy is imported until a batch runs.
"""

from __future__ import annotations

from medseg.batch.discover import Study, discover_studies
from medseg.batch.runner import BatchResult, run_batch
from medseg.batch.worker import WorkerConfig, process_study

__all__ = ["run_batch", "BatchResult", "Study", "discover_studies", "WorkerConfig", "process_study"]
