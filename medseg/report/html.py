"""The batch report: one self-contained HTML page (inline CSS, PNGs embedded as base64).

It reads ``RUN_DIR/manifest.jsonl`` (last record per study), ``RUN_DIR/run.json``
when present, and each study's ``overlay.png``; it shows a summary (counts, mean
stage timings, throughput, mean metrics per label), a table of studies (status,
reason of failure, timings, metrics), and the overlays.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from medseg.io.manifest import MANIFEST_NAME, latest_records, read_manifest
from medseg.errors import InputError
from medseg.io.atomic import write_text_atomic

STAGES = ("setup", "model_load", "load", "predict", "write_nifti", "write_dicomseg", "overlay", "evaluate", "total")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2430}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .muted{color:#667}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #d8dde6;border-radius:6px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;font-size:13px;margin:6px 0} th,td{border:1px solid #d8dde6;padding:4px 7px;text-align:left}
th{background:#f2f4f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#0a7a32;font-weight:600} .failed{color:#b3261e;font-weight:600} .lost{color:#8a5a00;font-weight:600}
.study{border-top:1px solid #d8dde6;padding-top:8px;margin-top:16px} img{max-width:100%;height:auto}
code{font-size:12px}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return _esc(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    return _esc(value)


def _metric_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    metrics = record.get("metrics") or {}
    rows = metrics.get("per_label") if isinstance(metrics, dict) else None
    return [r for r in rows or [] if isinstance(r, dict)]


def _row_name(row: dict[str, Any]) -> str:
    return str(row.get("name") or row.get("label_name") or row.get("label") or "?")


def _numeric_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        for k, v in row.items():
            if k not in keys and k not in ("label", "name", "label_name") and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                keys.append(k)
    preferred = [k for k in ("dice", "hd95", "nsd", "iou", "assd") if k in keys]
    return preferred + [k for k in keys if k not in preferred]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v) and not math.isinf(v)]
    return statistics.fmean(finite) if finite else float("nan")


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per status, mean stage timings of ``ok`` studies (s), mean metrics per label."""
    ok = [r for r in records if r.get("status") == "ok"]
    timings = {s: _mean([r["timings_s"][s] for r in ok if s in r.get("timings_s", {})]) for s in STAGES}
    per_label: dict[str, dict[str, list[float]]] = {}
    for r in ok:
        for row in _metric_rows(r):
            bucket = per_label.setdefault(_row_name(row), {})
            for k in _numeric_keys([row]):
                bucket.setdefault(k, []).append(float(row[k]))
    metrics = {name: {k: _mean(v) for k, v in d.items()} for name, d in per_label.items()}
    dice = [v["dice"] for v in metrics.values() if "dice" in v and not math.isnan(v["dice"])]
    return {
        "studies": len(records),
        "ok": len(ok),
        "failed": sum(1 for r in records if r.get("status") == "failed"),
        "lost": sum(1 for r in records if r.get("status") == "lost"),
        "mean_timings_s": {k: v for k, v in timings.items() if not math.isnan(v)},
        "metrics_per_label": metrics,
        "mean_dice": statistics.fmean(dice) if dice else None,
    }


def _summary_html(summary: dict[str, Any], run: dict[str, Any]) -> str:
    cards = [("studies", summary["studies"]), ("ok", summary["ok"]), ("failed", summary["failed"]),
             ("lost", summary["lost"])]
    if summary["mean_dice"] is not None:
        cards.append(("mean Dice", f"{summary['mean_dice']:.3f}"))
    if run.get("studies_per_minute"):
        cards.append(("studies / min", f"{run['studies_per_minute']:.2f}"))
    parts = ['<div class="cards">'] + [f'<div class="card"><b>{_esc(v)}</b>{_esc(k)}</div>' for k, v in cards]
    parts.append("</div>")
    info = [(k, run[k]) for k in ("model", "input", "backend", "workers", "formats", "reference", "started",
                                  "finished", "elapsed_s") if run.get(k) not in (None, "")]
    if info:
        parts.append("<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in info)
                     + "</table>")
    timings = summary["mean_timings_s"]
    if timings:
        parts.append("<h2>Mean time per stage (successful studies, seconds)</h2><table><tr>"
                     + "".join(f"<th>{_esc(k)}</th>" for k in timings) + "</tr><tr>"
                     + "".join(f'<td class="num">{v:.3f}</td>' for v in timings.values()) + "</tr></table>")
    metrics = summary["metrics_per_label"]
    if metrics:
        keys = _numeric_keys([dict(v, name=k) for k, v in metrics.items()])
        parts.append("<h2>Mean metrics per structure</h2><table><tr><th>structure</th>"
                     + "".join(f"<th>{_esc(k)}</th>" for k in keys) + "</tr>")
        for name, vals in metrics.items():
            parts.append(f"<tr><td>{_esc(name)}</td>"
                         + "".join(f'<td class="num">{_fmt(vals.get(k))}</td>' for k in keys) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts)


def _study_row(r: dict[str, Any]) -> str:
    status = str(r.get("status", "?"))
    t = r.get("timings_s", {})
    err = r.get("error") or {}
    reason = f"{err.get('type', '')}: {err.get('message', '')}" if err else ""
    dice = [row.get("dice") for row in _metric_rows(r) if isinstance(row.get("dice"), (int, float))]
    shape = "x".join(str(s) for s in (r.get("image") or {}).get("shape", []))
    cells = [
        f'<td><a href="#{_esc(r["study_id"])}">{_esc(r["study_id"])}</a></td>',
        f'<td class="{_esc(status)}">{_esc(status)}</td>',
        f"<td>{_esc(shape)}</td>",
        *(f'<td class="num">{_fmt(t.get(s), 2)}</td>' for s in ("load", "predict", "total")),
        f'<td class="num">{_fmt(_mean(dice)) if dice else ""}</td>',
        f"<td>{_esc(reason)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _study_section(r: dict[str, Any], run_dir: Path, embed: bool) -> str:
    parts = [f'<div class="study" id="{_esc(r["study_id"])}"><h2>{_esc(r["study_id"])} '
             f'<span class="{_esc(r.get("status"))}">{_esc(r.get("status"))}</span></h2>',
             f'<div class="muted">input <code>{_esc(r.get("input"))}</code>'
             + (f' &middot; series <code>{_esc(r.get("series_uid"))}</code>' if r.get("series_uid") else "")
             + "</div>"]
    outputs = r.get("outputs") or {}
    if any(k != "overlay" for k in outputs):
        parts.append("<div>outputs: " + ", ".join(
            f'<a href="{_esc(o["path"])}">{_esc(k)}</a> <code>{_esc(o.get("sha256", "")[:12])}</code>'
            for k, o in outputs.items() if k != "overlay") + "</div>")
    rows = _metric_rows(r)
    if rows:
        keys = _numeric_keys(rows)
        parts.append("<table><tr><th>structure</th>" + "".join(f"<th>{_esc(k)}</th>" for k in keys) + "</tr>"
                     + "".join(f"<tr><td>{_esc(_row_name(row))}</td>"
                               + "".join(f'<td class="num">{_fmt(row.get(k))}</td>' for k in keys) + "</tr>"
                               for row in rows) + "</table>")
    elif isinstance(r.get("metrics"), dict) and r["metrics"].get("error"):
        parts.append(f'<div class="failed">metrics: {_esc(r["metrics"]["error"])}</div>')
    overlay = outputs.get("overlay")
    if embed and overlay and (run_dir / overlay["path"]).is_file():
        data = base64.b64encode((run_dir / overlay["path"]).read_bytes()).decode("ascii")
        parts.append(f'<img alt="overlay of {_esc(r["study_id"])}" src="data:image/png;base64,{data}">')
    parts.append("</div>")
    return "\n".join(parts)


def render_report(run_dir: str | os.PathLike[str], *, max_overlays: int = 200) -> str:
    """The HTML text of the report of the batch run in ``run_dir``.

    Args:
        run_dir: a batch output folder (holding ``manifest.jsonl``).
        max_overlays: embed overlays for at most this many studies (keeps the page small).

    Raises:
        InputError: ``run_dir`` holds no manifest records.
    """
    run_dir = Path(run_dir)
    records = list(latest_records(read_manifest(run_dir / MANIFEST_NAME)).values())
    if not records:
        raise InputError(f"{run_dir}: no {MANIFEST_NAME} records; is this a `medseg batch` output folder?")
    run_json = run_dir / "run.json"
    run = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else {}
    order = {"failed": 0, "lost": 1, "ok": 2}
    records.sort(key=lambda r: (order.get(str(r.get("status")), 3), r["study_id"]))
    summary = summarize(records)
    table = ("<table><tr><th>study</th><th>status</th><th>shape</th><th>load s</th><th>predict s</th><th>total s</th>"
             "<th>mean Dice</th><th>reason</th></tr>" + "\n".join(_study_row(r) for r in records) + "</table>")
    sections = "\n".join(_study_section(r, run_dir, n < max_overlays) for n, r in enumerate(records))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>medseg batch report - {_esc(run_dir.name)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>medseg batch report</h1><div class=\"muted\">{_esc(run_dir.resolve())}</div>\n"
        f"{_summary_html(summary, run)}\n<h2>Studies</h2>\n{table}\n{sections}\n</body></html>\n"
    )


def write_report(run_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None, *,
                 max_overlays: int = 200) -> Path:
    """Write the report of ``run_dir`` to ``path`` (default ``run_dir/report.html``) atomically; returns the path."""
    target = Path(path) if path is not None else Path(run_dir) / "report.html"
    write_text_atomic(target, render_report(run_dir, max_overlays=max_overlays))
    return target


__all__ = ["render_report", "write_report", "summarize"]
