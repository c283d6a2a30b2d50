"""The self-contained HTML page of a batch run; overlays (now in :mod:`medseg.plots.overlays`) re-exported."""

from __future__ import annotations

from medseg.lazy import lazy_exports

_EXPORTS = {"write_report": "medseg.report.html", "render_overlay": "medseg.plots.overlays",
            "write_overlay": "medseg.plots.overlays"}

# lazy: matplotlib is imported only when a report is drawn
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
