"""Pictures shared by every room above: overlays of label maps on images
(:mod:`~medseg.plots.overlays`) and charts (:mod:`~medseg.plots.charts`). matplotlib is imported
inside the functions, so importing this package stays light."""

from __future__ import annotations
