"""The utility vs membership-inference trade-off scatter (notebook 07), beside figures.py."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D

from .figures import FORGET, RETAIN, _figure, _palette, _require, _save, _style


def plot_tradeoff(table: pd.DataFrame, path, *, xlabel: str = "utility (%)",
                  ylabel: str = "MIA gap (percentage points)") -> list[Path]:
    """Scatter of utility vs membership-inference gap, one labelled point per method.

    table: columns method, utility and mia_gap in [0, 1] (drawn in %), needs_retain (bool:
    the method reads D_r). Several rows per method (seeds) are averaged, with std error
    bars. Marker: circle = D_f only, square = needs D_r.
    """
    _require(table, ["method", "utility", "mia_gap", "needs_retain"], "plot_tradeoff")
    g = (table.assign(needs_retain=table["needs_retain"].astype(bool),
                      utility=table["utility"] * 100, mia_gap=table["mia_gap"] * 100)
         .groupby(["method", "needs_retain"], sort=False)[["utility", "mia_gap"]]
         .agg(["mean", "std"]).fillna(0.0))
    colours = _palette(len(g))
    with _style():
        fig, axes = _figure(1, panel=(5.0, 4.0))
        ax = axes[0][0]
        handles = []
        for colour, ((method, needs), row) in zip(colours, g.iterrows()):
            ax.errorbar(row[("utility", "mean")], row[("mia_gap", "mean")],
                        xerr=row[("utility", "std")], yerr=row[("mia_gap", "std")],
                        marker="s" if needs else "o", markersize=8, color=colour, ls="",
                        markeredgecolor="black", capsize=2, alpha=0.9)
            # one legend entry per method (labels beside points collide in clusters)
            handles.append(Line2D([], [], ls="", marker="s" if needs else "o", color=colour,
                                  markeredgecolor="black", label=method))
        ax.set(xlabel=xlabel, ylabel=ylabel)
        handles += [Line2D([], [], ls="", marker="o", color="grey", label=f"{FORGET} only"),
                    Line2D([], [], ls="", marker="s", color="grey", label=f"needs {RETAIN}")]
        fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=8)
        return _save(fig, path)
