"""Reports: PNG overlays of labels on images and the self-contained HTML page of a batch run."""

from __future__ import annotations

__all__ = ["write_report", "render_overlay", "write_overlay"]


def __getattr__(name: str):  # lazy: matplotlib is imported only when a report is drawn
    if name == "write_report":
        from medseg.report.html import write_report

        return write_report
    if name in ("render_overlay", "write_overlay"):
        from medseg.report import overlays

        return getattr(overlays, name)
    raise AttributeError(name)
