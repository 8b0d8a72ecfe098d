"""One matplotlib style for every affectube figure, and atomic multi-format saving.

All figures are drawn with the non-interactive Agg backend (no display needed on a
cluster node). :func:`figure` opens a figure in the house style sized from the
``figures`` params section; :func:`save` writes it once per requested format
(PNG plus PDF/SVG), each file atomically, and returns the paths written.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: no display on cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from affectube.errors import ConfigError  # noqa: E402
from affectube.io import atomic_path  # noqa: E402

logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting logs every glyph at INFO

RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.4,
    "figure.constrained_layout.use": True,
    "savefig.bbox": "tight",  # never clip a legend placed outside the axes
    "pdf.fonttype": 42,  # editable text in PDF/SVG
    "svg.fonttype": "none",
    "image.cmap": "Blues",
}


class Style:
    """Size, resolution, palette and formats from the ``figures`` params section (filled with the
    schema's defaults: :func:`affectube.config.sections`)."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.dpi = int(cfg["dpi"])
        self.width = float(cfg["width"])
        self.height = float(cfg["height"])
        self.formats = list(cfg["formats"])
        self.cmap = cfg["cmap"]
        try:
            self._palette = matplotlib.colormaps[cfg["palette"]]
        except KeyError:
            raise ConfigError(f"params.yaml: figures.palette: {cfg['palette']!r} is not a matplotlib colormap") from None
        try:
            matplotlib.colormaps[self.cmap]
        except KeyError:
            raise ConfigError(f"params.yaml: figures.cmap: {self.cmap!r} is not a matplotlib colormap") from None

    def colors(self, n: int) -> list:
        """``n`` distinct colours from the palette (qualitative palettes are cycled, others sampled)."""
        pal = self._palette
        size = getattr(pal, "N", 256)
        if isinstance(pal, mcolors.ListedColormap) and size <= 20:
            return [pal(i % size) for i in range(n)]
        return [pal(x) for x in ([0.5] if n == 1 else [0.1 + 0.8 * i / (n - 1) for i in range(n)])]

    def color_map(self, names) -> dict:
        names = list(dict.fromkeys(names))
        return dict(zip(names, self.colors(len(names))))

    @contextlib.contextmanager
    def figure(self, nrows: int = 1, ncols: int = 1, scale: tuple[float, float] = (1.0, 1.0), **kw) -> Iterator:
        """A new figure (and axes) in the house style; always closed afterwards."""
        with plt.rc_context(RC | {"image.cmap": self.cmap}):
            fig, axes = plt.subplots(
                nrows, ncols, figsize=(self.width * scale[0], self.height * scale[1]), dpi=self.dpi, squeeze=False, **kw
            )
            try:
                yield fig, axes
            finally:
                plt.close(fig)

    def save(self, fig, stem: str | Path) -> list[Path]:
        """Write ``stem.<fmt>`` for every configured format, atomically; return the paths."""
        stem = Path(stem)
        out = []
        with plt.rc_context(RC):
            for fmt in self.formats:
                path = stem.with_name(f"{stem.name}.{fmt}")
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, format=fmt, dpi=self.dpi)
                out.append(path)
        return out


def wrap_label(text: str, width: int = 14) -> str:
    """Break long tick labels so they do not overlap."""
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or str(text)
