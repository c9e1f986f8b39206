"""The frame every respaths figure shares: matplotlib without a window, a titled Figure, its PNG and
SVG bytes, and the two files written whole. The figures themselves (respaths.study.figures, the
paper's; respaths.layers.figures, a layer sweep's) draw into it from plain numbers.
"""
from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede any pyplot import anywhere
from matplotlib.figure import Figure  # noqa: E402  (no pyplot: no global state between figures)

from .io.atomic import write_bytes  # noqa: E402


def new_figure(ncols: int, title: str, subtitle: str, width: float = 5.2, height: float = 4.0) -> Figure:
    """A figure of ncols panels of width x height inches, titled, its subtitle wrapped below the title."""
    fig = Figure(figsize=(width * ncols, height), dpi=100, layout="constrained")
    # a long subtitle (a brought model's name and weights) wraps instead of running off the figure
    lines = textwrap.wrap(subtitle, width=int(12 * width * ncols)) or [""]  # ~12 characters per inch at 11 pt
    fig.suptitle("\n".join([title, *lines]), fontsize=11)
    return fig


def render(fig: Figure, fmt: str, dpi: int = 100) -> bytes:
    """PNG or SVG bytes; SVG keeps text as text (smaller, searchable) and no date (reproducible)."""
    buf = io.BytesIO()
    # a fixed salt: the SVG's clip-path ids stay the same from one build to the next (no diff noise)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "respaths"}):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def save(fig: Figure, prefix: str | os.PathLike) -> dict[str, bytes]:
    """Write prefix.png and prefix.svg (each to a temporary name, then renamed); returns both bytes."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for fmt in ("png", "svg"):
        data = render(fig, fmt)
        path = prefix.with_name(f"{prefix.name}.{fmt}")
        write_bytes(path, data)
        out[fmt] = data
    return out
