"""The batch manifest: ``OUTPUT/manifest.jsonl``, one JSON record per finished study.

Each record is appended with a single ``write`` on a file opened in append mode and
then ``fsync``-ed, so a kill leaves at most one truncated last line, which readers
skip. The last record of a study wins. A study counts as complete only when its
last record says ``"ok"`` and every output it lists exists with the recorded
SHA-256; ``--resume`` re-runs everything else.

Record fields: ``study_id``, ``input``, ``kind``, ``series_uid``, ``status``
(``ok`` | ``failed`` | ``lost``), ``error`` (``{"type", "message"}`` or null),
``timings_s`` (seconds per stage), ``outputs`` (``{format: {"path", "sha256",
"bytes"}}``, paths relative to the output folder), ``metrics``, ``model_sha256``,
``versions``, ``worker``, ``started``/``finished`` (UTC ISO 8601).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medseg.io.atomic import sha256_file, write_text_atomic
from medseg.io.tables import json_safe

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
STATUSES = ("ok", "failed", "lost")


def output_entry(path: Path, out_dir: Path) -> dict[str, Any]:
    """The manifest entry of one written output: relative path, SHA-256, size in bytes."""
    return {"path": path.relative_to(out_dir).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a manifest file, in order; a missing file gives ``[]``.

    Lines that are not valid JSON objects (a line cut short by a kill) are skipped
    with a warning.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a truncated or corrupt manifest line", path, lineno)
                continue
            if isinstance(rec, dict) and "study_id" in rec:
                records.append(rec)
    return records


def latest_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each study, keyed by ``study_id`` (first-seen order)."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        latest[rec["study_id"]] = rec
    return latest


def _line(record: dict[str, Any]) -> str:
    """One strict-JSON manifest line (non-finite floats as ``null``: JSON has no ``Infinity``)."""
    return json.dumps(json_safe(record), sort_keys=True, default=str, allow_nan=False)


def append_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one record as a JSON line: one ``write`` call, then ``fsync``."""
    data = (_line(record) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask decides, as for every file
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Replace the manifest with ``records`` atomically."""
    text = "".join(_line(r) + "\n" for r in records)
    write_text_atomic(path, text)


def is_complete(record: dict[str, Any], out_dir: str | os.PathLike[str], *, verify: bool = True) -> bool:
    """True when ``record`` is ``ok`` and each listed output exists (and, with ``verify``, matches its SHA-256)."""
    if record.get("status") != "ok" or not record.get("outputs"):
        return False
    out_dir = Path(out_dir)
    for entry in record["outputs"].values():
        path = out_dir / entry["path"]
        if not path.is_file() or path.stat().st_size != entry.get("bytes", path.stat().st_size):
            return False
        if verify and sha256_file(path) != entry["sha256"]:
            log.warning("%s: checksum differs from the manifest; the study will be re-run", path)
            return False
    return True


def remove_partials(out_dir: str | os.PathLike[str]) -> int:
    """Delete temporary files (``.*.partial*``) left by a killed run; returns how many."""
    n = 0
    for path in Path(out_dir).rglob(".*.partial*"):
        if path.is_file():
            path.unlink()
            n += 1
    return n


def plan_resume(
    study_ids: Iterable[str], out_dir: str | os.PathLike[str], *, verify: bool = True, result_key: str | None = None
) -> tuple[set[str], list[dict[str, Any]]]:
    """Decide what a resumed run must do, and compact the manifest to match.

    Returns ``(done, kept)``: the IDs of studies whose last record is complete (and, with
    ``result_key``, was made by the same model weights and settings), and those records.
    The manifest is rewritten atomically with only ``kept``, so that when the run ends it
    holds exactly one record per study; results of another model are run again.
    """
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST_NAME
    latest = latest_records(read_manifest(manifest))
    wanted = set(study_ids)
    complete = [rec for sid, rec in latest.items() if sid in wanted and is_complete(rec, out_dir, verify=verify)]
    kept = [rec for rec in complete if result_key is None or rec.get("result_key") == result_key]
    if len(kept) < len(complete):
        log.warning("%d complete stud(ies) were made by another model or other settings (model SHA-256, TTA, "
                    "formats, prompts): they are run again", len(complete) - len(kept))
    done = {rec["study_id"] for rec in kept}
    write_manifest(manifest, kept)
    removed = remove_partials(out_dir)
    if removed:
        log.info("removed %d partial file(s) left by an interrupted run", removed)
    return done, kept


__all__ = [
    "MANIFEST_NAME",
    "STATUSES",
    "sha256_file",
    "output_entry",
    "read_manifest",
    "latest_records",
    "append_record",
    "write_manifest",
    "is_complete",
    "remove_partials",
    "plan_resume",
]
