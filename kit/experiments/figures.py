"""The paper's figures and the kit's summary plots: one function per figure, table in, files out.

Every function takes tidy tables or arrays and a path, writes a PNG and a vector PDF with the
same stem (`fig.png` and `fig.pdf` for path `fig`, `fig.png` or `fig.pdf`), creates the parent
folder and returns the written paths. Figures are built on matplotlib's Agg canvas without
pyplot, so no global backend is switched and no figure is left open; the seaborn style is set
in one place (`_style`) and applied only while a figure is drawn.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

FORGET, RETAIN, TEST = r"$\mathcal{D}_f$", r"$\mathcal{D}_r$", r"$\mathcal{D}_{test}$"


# ---------------------------------------------------------------- shared helpers
@contextlib.contextmanager
def _style():
    """The kit's one figure style: seaborn whitegrid, paper context, embeddable PDF fonts."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1), \
            mpl.rc_context({"pdf.fonttype": 42, "savefig.dpi": 150, "savefig.bbox": "tight",
                            "axes.titleweight": "bold"}):
        yield


def _figure(ncols: int = 1, nrows: int = 1, *, panel=(3.6, 3.2), **subplot_kw):
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


# no creation dates or versions in the files: the same figure gives the same bytes, so
# `make run` leaves git clean when the results did not change
_METADATA = {".png": {"Software": None}, ".pdf": {"CreationDate": None, "ModDate": None,
                                                  "Producer": None, "Creator": None}}


def _save(fig: Figure, path) -> list[Path]:
    """Write `fig` as PNG and PDF beside each other (deterministic bytes); return both paths."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [Path(f"{stem}.png"), Path(f"{stem}.pdf")]
    for p in out:
        fig.savefig(p, metadata=_METADATA[p.suffix])
    return out


NOT_REACHED = " (not reached)"


def _marked(title: str, reached) -> str:
    """A panel title, marked when its run did not reach the objective.

    >>> _marked("ADV", False), _marked("ADV", True), _marked("ADV", None)
    ('ADV (not reached)', 'ADV', 'ADV')
    """
    return title if reached is None or bool(reached) else title + NOT_REACHED


def _all_reached(table: pd.DataFrame) -> bool | None:
    """False if a row of `table` did not reach (missing values, e.g. the "before" rows,
    count as reached); None without a reached column."""
    if "reached" not in table.columns:
        return None
    return not (table["reached"] == False).any()  # noqa: E712 (NaN is neither)


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(columns)}; missing {missing} "
                         f"(has {list(table.columns)})")
    if table.empty:
        raise ValueError(f"{what} got an empty table")


def _palette(n: int) -> list:
    """One categorical palette for class colours: tab10, tab20, then evenly spaced hues."""
    if n <= 10:
        return sns.color_palette("tab10", 10)[:n]
    if n <= 20:
        return sns.color_palette("tab20", 20)[:n]
    return sns.color_palette("husl", n)


def _short_layer_names(names: Sequence[str]) -> list[str]:
    """'net.layer3' -> 'layer3', 'net.encoder.layers.encoder_layer_4' -> 'block4' (if unique)."""
    short = [re.sub(r"^encoder_layer_", "block", str(n).split(".")[-1]) for n in names]
    return short if len(set(short)) == len(short) else [str(n).removeprefix("net.") for n in names]


# ---------------------------------------------------------------- training
def plot_training_curve(history: pd.DataFrame, path) -> list[Path]:
    """Loss and accuracy per epoch of pre-training.

    history: columns epoch, train_loss (mean cross-entropy, nats), train_acc and test_acc
    in [0, 1]; accuracy is drawn in %.
    """
    _require(history, ["epoch", "train_loss", "train_acc", "test_acc"], "plot_training_curve")
    h = history.sort_values("epoch")
    with _style():
        fig, axes = _figure(2)
        loss_ax, acc_ax = axes[0]
        loss_ax.plot(h["epoch"], h["train_loss"], marker=".", color="C0")
        loss_ax.set(xlabel="epoch", ylabel="training cross-entropy (nats)", title="loss")
        acc_ax.plot(h["epoch"], h["train_acc"] * 100, marker=".", color="C0", label="train")
        acc_ax.plot(h["epoch"], h["test_acc"] * 100, marker=".", color="C1", label="test")
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        acc_ax.legend()
        return _save(fig, path)


# ---------------------------------------------------------------- Fig. 2
def plot_confusion(matrices: Mapping[str, np.ndarray], path, *,
                   class_names: Sequence[str] | None = None, title: str | None = None,
                   reached: Mapping[str, bool] | None = None) -> list[Path]:
    """Fig. 2: D_f predictions before (rows) vs after (columns) unlearning, one panel per method.

    reached: method -> whether its runs reached the objective; panels of runs that did not
    are titled "(not reached)".
    matrices: method -> (C, C) counts or row-normalised rates (`kit.evaluation.analysis.average_confusion`);
    all panels share one colour scale. Cells are annotated when C <= 10.
    """
    if not matrices:
        raise ValueError("plot_confusion needs at least one matrix")
    mats = {k: np.asarray(v, dtype=float) for k, v in matrices.items()}
    shapes = {m.shape for m in mats.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or len(set(next(iter(shapes)))) != 1:
        raise ValueError(f"matrices must be square and of one size, got {sorted(shapes)}")
    c = next(iter(shapes))[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class_names for {c} classes")
    vmax = max(float(m.max()) for m in mats.values()) or 1.0
    counts = all(np.allclose(m, np.round(m)) for m in mats.values())
    ticks = True if c <= 20 else "auto"  # "auto" thins labels but costs extra draws
    with _style():
        fig, axes = _figure(len(mats), panel=(3.4 + 0.04 * c, 3.2 + 0.04 * c))
        for ax, (method, m) in zip(axes[0], mats.items()):
            sns.heatmap(pd.DataFrame(m, index=names, columns=names), ax=ax, cmap="Blues", vmin=0,
                        vmax=vmax, cbar=False, square=True, annot=c <= 10,
                        fmt=".0f" if counts else ".2f", annot_kws={"size": 7},
                        xticklabels=ticks, yticklabels=ticks, linewidths=0.3, linecolor="white")
            ax.set(title=_marked(method, (reached or {}).get(method)), xlabel="prediction after")
        axes[0][0].set_ylabel("prediction before")
        fig.colorbar(axes[0][0].collections[0], ax=axes[0].tolist(), shrink=0.8,
                     label="count" if counts else "share of row")
        if title:
            fig.suptitle(title)
        return _save(fig, path)


# ---------------------------------------------------------------- Fig. 3
def plot_tsne(panels: Mapping[str, Mapping[str, np.ndarray]], path, *,
              class_names: Sequence[str] | None = None) -> list[Path]:
    """Fig. 3: t-SNE panels, D_r as dots and D_f as larger black-edged triangles, coloured by label.

    panels: title -> dict(xy=(n, 2), labels=(n,) int, is_forget=(n,) bool, optional reached
    bool), typically from one joint `kit.evaluation.analysis.tsne_embedding`, so the panels
    share axes. One legend for all panels. D_f is drawn on top of D_r; a panel whose run did
    not reach the objective is titled "(not reached)".
    """
    if not panels:
        raise ValueError("plot_tsne needs at least one panel")
    for title, p in panels.items():
        missing = {"xy", "labels", "is_forget"} - set(p)
        if missing:
            raise ValueError(f"panel {title!r} lacks {sorted(missing)}")
        n = len(p["xy"])
        if np.shape(p["xy"]) != (n, 2) or len(p["labels"]) != n or len(p["is_forget"]) != n:
            raise ValueError(f"panel {title!r}: xy must be (n, 2) with n labels and n is_forget flags")
    top = max(int(np.max(p["labels"])) for p in panels.values() if len(p["labels"])) + 1
    num = len(class_names) if class_names is not None else top
    if num < top:
        raise ValueError(f"labels go up to {top - 1} but only {num} class_names were given")
    colors = np.array(_palette(num))
    names = list(class_names) if class_names is not None else [str(i) for i in range(num)]
    with _style():
        fig, axes = _figure(len(panels), sharex=True, sharey=True)
        for ax, (title, p) in zip(axes[0], panels.items()):
            xy, labels = np.asarray(p["xy"]), np.asarray(p["labels"]).astype(int)
            forget = np.asarray(p["is_forget"]).astype(bool)
            ax.scatter(*xy[~forget].T, c=colors[labels[~forget]], s=6, alpha=0.5, linewidths=0)
            ax.scatter(*xy[forget].T, c=colors[labels[forget]], s=45, marker="^",
                       edgecolors="black", linewidths=0.7, zorder=3)
            ax.set(title=_marked(title, p.get("reached")), xlabel="t-SNE 1", xticks=[],
                   yticks=[])  # t-SNE units mean nothing
        axes[0][0].set_ylabel("t-SNE 2")
        handles = [Line2D([], [], ls="", marker="o", color="grey", markersize=4, label=RETAIN),
                   Line2D([], [], ls="", marker="^", color="grey", markeredgecolor="black",
                          markersize=7, label=FORGET)]
        present = sorted({int(v) for p in panels.values() for v in np.asarray(p["labels"])})
        if len(present) <= 20:
            handles += [Line2D([], [], ls="", marker="o", color=colors[i], markersize=5,
                               label=names[i]) for i in present]
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        return _save(fig, path)


# ---------------------------------------------------------------- Fig. 4
def plot_cka(matrices: Mapping[str, Mapping[str, pd.DataFrame]], path) -> list[Path]:
    """Fig. 4: layer-wise CKA, top row D_f, bottom row D_r, one column per method.

    matrices: method -> dict(forget=DataFrame, retain=DataFrame, optional reached=bool) from
    `kit.evaluation.analysis.cka_matrix`
    (index = layers before, columns = layers after). x = layer before, y = layer after (first
    layer at the bottom); one colour scale [0, 1] for all panels.
    """
    if not matrices:
        raise ValueError("plot_cka needs at least one method")
    rows = [("forget", FORGET), ("retain", RETAIN)]
    for method, pair in matrices.items():
        missing = {"forget", "retain"} - set(pair)
        if missing:
            raise ValueError(f"method {method!r} lacks CKA matrices for {sorted(missing)}")
    with _style():
        fig, axes = _figure(len(matrices), 2, panel=(3.3, 3.0))
        for j, (method, pair) in enumerate(matrices.items()):
            for i, (key, label) in enumerate(rows):
                frame = pair[key]
                ax = axes[i][j]
                shown = pd.DataFrame(np.asarray(frame, dtype=float).T,  # rows: after, cols: before
                                     index=_short_layer_names(frame.columns),
                                     columns=_short_layer_names(frame.index))
                sns.heatmap(shown, ax=ax, cmap="magma", vmin=0, vmax=1, cbar=False, square=True,
                            xticklabels=True, yticklabels=True)
                ax.invert_yaxis()
                ax.tick_params(axis="x", labelrotation=90)
                ax.tick_params(axis="y", labelrotation=0)
                ax.set(xlabel="layer before" if i == 1 else "",
                       ylabel=f"{label}: layer after" if j == 0 else "",
                       title=_marked(method, pair.get("reached")) if i == 0 else "")
        fig.colorbar(axes[0][0].collections[0], ax=axes.ravel().tolist(), shrink=0.6,
                     label="linear CKA (0 to 1)")
        return _save(fig, path)


# ---------------------------------------------------------------- continual unlearning
def _split_order(splits) -> list[str]:
    def key(s):
        m = re.fullmatch(r"forget_(\d+)", s)
        fixed = {"retain": 0, "test": 1}
        return (0, fixed[s], 0) if s in fixed else (1, int(m.group(1)), 0) if m else (2, 0, s)
    return sorted(map(str, splits), key=key)


def plot_continual(table: pd.DataFrame, path) -> list[Path]:
    """Continual unlearning: accuracy after each request on D_r, D_test and every forget set so far.

    table: columns method, seed, request (1..T), split ("retain", "test", "forget_1".."forget_T"),
    accuracy in [0, 1] (drawn in %), optional reached. One panel per method; mean over seeds
    with a +-1 std band; a method with a request that did not reach is titled "(not reached)".
    """
    _require(table, ["method", "seed", "request", "split", "accuracy"], "plot_continual")
    t = table.assign(split=table["split"].astype(str), accuracy=table["accuracy"] * 100)
    order = _split_order(t["split"].unique())
    n_forget = sum(s.startswith("forget") for s in order)
    reds = iter(sns.color_palette("flare", max(n_forget, 1)))
    colours = {s: "C0" if s == "retain" else "C2" if s == "test" else next(reds)
               if s.startswith("forget") else "C7" for s in order}
    dashes = {s: (4, 2) if s.startswith("forget") else "" for s in order}
    pretty = {"retain": RETAIN, "test": TEST}
    methods = list(dict.fromkeys(t["method"]))
    with _style():
        fig, axes = _figure(len(methods), sharey=True)
        for ax, method in zip(axes[0], methods):
            sns.lineplot(data=t[t["method"] == method], x="request", y="accuracy", hue="split",
                         hue_order=order, style="split", style_order=order, dashes=dashes,
                         palette=colours, estimator="mean", errorbar="sd", marker="o", ax=ax,
                         legend=False)
            ax.set(title=_marked(method, _all_reached(t[t["method"] == method])),
                   xlabel="request", ylabel="accuracy (%)")
            ax.set_xticks(sorted(t["request"].unique()))
        handles = [Line2D([], [], color=colours[s], marker="o", ls="--" if dashes[s] else "-",
                          label=pretty.get(s, s.replace("forget_", r"$\mathcal{D}_f$ #")))
                   for s in order]
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title="split")
        return _save(fig, path)


# ---------------------------------------------------------------- main table
def plot_method_table(table: pd.DataFrame, path, *, x: str = "k",
                      xlabel: str = "forget-set size k") -> list[Path]:
    """Summary of the main table: accuracy on forget/retain/test per method and forget-set size k.

    table: columns method, k, split, accuracy in [0, 1] (one row per seed, or already
    averaged), optional reached; drawn in %. One panel per split, bars per method grouped by
    k, error bars = std over rows; every bar's mean is printed above it, so a bar of height 0
    reads "0". Bars of a (method, k) with a run that did not reach the objective are hatched.
    """
    _require(table, ["method", x, "split", "accuracy"], "plot_method_table")
    t = table.assign(split=table["split"].astype(str), accuracy=table["accuracy"] * 100)
    splits = list(dict.fromkeys(t["split"]))  # panels in the table's order
    methods = list(dict.fromkeys(t["method"]))
    ks = list(dict.fromkeys(t[x])) if x != "k" else sorted(t[x].unique())
    titles = {"forget": FORGET, "forget_shift": f"{FORGET} shifted 1 px",
              "forget_noise": f"{FORGET} + L2 noise", "relabel": f"{FORGET}: new label",
              "retain": RETAIN, "test": TEST}
    # "deep" repeats after 10 colours: more methods get distinct ones (tab20, then hues)
    n = len(methods)
    colours = sns.color_palette("deep", n) if n <= 10 else _palette(n)
    with _style():
        fig, axes = _figure(len(splits), sharey=True)
        for ax, split in zip(axes[0], splits):
            sns.barplot(data=t[t["split"] == split], x=x, y="accuracy", hue="method",
                        order=ks, hue_order=methods, errorbar="sd", palette=colours, ax=ax,
                        legend=False)
            for method, bars in zip(methods, ax.containers):
                ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
                for value, bar in zip(ks, bars):
                    group = t[(t["method"] == method) & (t[x] == value)]
                    if not _all_reached(group):
                        bar.set_hatch("///")
                        bar.set_edgecolor("black")
            ax.set(title=titles.get(split, split), xlabel=xlabel,
                   ylabel="accuracy (%)", ylim=(0, 108))
        handles = [Patch(color=sns.desaturate(c, 0.75), label=m)   # as barplot draws them
                   for m, c in zip(methods, colours)]
        if not _all_reached(t):
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="///",
                                 label=NOT_REACHED.strip()))
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title="method")
        return _save(fig, path)


from .figure_tradeoff import plot_tradeoff  # noqa: E402,F401  (the summary scatter)
