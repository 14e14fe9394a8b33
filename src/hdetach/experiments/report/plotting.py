"""Figures for files, made without pyplot: no global backend is chosen for the process
(a user's notebook or GUI keeps its own), and nothing needs a display.

A ``matplotlib.figure.Figure`` made directly draws with the Agg canvas when saved.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure


def subplots(*grid: int, **kwargs: Any) -> tuple[Figure, Any]:
    """Like ``pyplot.subplots``: ``subplots(figsize=(6, 4))`` or ``subplots(1, 2, sharey=True)``
    gives the figure and its axes; the figure is freed with its last reference."""
    figure_keys = ("figsize", "dpi", "layout")
    fig = Figure(**{k: kwargs.pop(k) for k in figure_keys if k in kwargs})
    return fig, fig.subplots(*grid, **kwargs)


BAND_NOTE = "line: mean over the n seeds; band: their min to max"


def title_with_band(ax: Any, title: str, banded: bool, note: str = BAND_NOTE) -> None:
    """The figure's title, and what its bands are wherever it draws one."""
    ax.set_title(f"{title}\n{note}" if banded else title, fontsize=10)


def chance_line(ax: Any, chance: float | None) -> None:
    """A dashed grey line at the metric of a uniform guess, named so in the legend."""
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label=f"chance ({chance:.3g})")
