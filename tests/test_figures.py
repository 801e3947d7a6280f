"""kit.figures: every figure function writes a non-empty PNG and PDF from tiny synthetic inputs."""
import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest

from kit.experiments import figures

RNG = np.random.default_rng(0)


def check_written(paths, stem):
    assert [p.name for p in paths] == [f"{stem.name}.png", f"{stem.name}.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


def cka_frame(layers):
    return pd.DataFrame(RNG.uniform(size=(len(layers), len(layers))), index=layers, columns=layers)


def test_plot_training_curve(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [2.0, 1.2, 0.8],
                            "train_acc": [0.3, 0.6, 0.8], "test_acc": [0.3, 0.5, 0.7]})
    stem = tmp_path / "new" / "dir" / "curve"  # parent folders are created
    check_written(figures.plot_training_curve(history, stem.with_suffix(".png")), stem)


def test_plot_confusion(tmp_path):
    counts = {m: RNG.integers(0, 5, size=(3, 3)) for m in ("NegGrad", "ADV", "ADV+IMP")}
    check_written(figures.plot_confusion(counts, tmp_path / "fig2", class_names=["a", "b", "c"],
                                         title="CIFAR-10, k=16"), tmp_path / "fig2")
    rates = {"NegGrad": RNG.dirichlet(np.ones(12), size=12)}  # C > 10: no annotations
    check_written(figures.plot_confusion(rates, tmp_path / "rates.pdf"), tmp_path / "rates")
    with pytest.raises(ValueError, match="square"):
        figures.plot_confusion({"a": np.zeros((2, 3))}, tmp_path / "bad")


def test_plot_tsne(tmp_path):
    n = 30
    panel = lambda: dict(xy=RNG.normal(size=(n, 2)), labels=RNG.integers(0, 4, n),  # noqa: E731
                         is_forget=np.arange(n) < 5)
    panels = {"before": panel(), "NegGrad": panel(), "ADV+IMP": panel()}
    check_written(figures.plot_tsne(panels, tmp_path / "fig3"), tmp_path / "fig3")
    many = {"before": dict(xy=RNG.normal(size=(n, 2)), labels=np.arange(n) % 25,
                           is_forget=np.arange(n) % 3 == 0)}  # > 20 classes: larger palette
    check_written(figures.plot_tsne(many, tmp_path / "many"), tmp_path / "many")
    with pytest.raises(ValueError, match="class_names"):
        figures.plot_tsne(panels, tmp_path / "bad", class_names=["a", "b"])


def test_plot_cka(tmp_path):
    layers = ["net.layer1", "net.layer2", "net.layer3", "net.avgpool"]
    mats = {m: {"forget": cka_frame(layers), "retain": cka_frame(layers)}
            for m in ("NegGrad", "ADV+IMP")}
    check_written(figures.plot_cka(mats, tmp_path / "fig4"), tmp_path / "fig4")
    with pytest.raises(ValueError, match="retain"):
        figures.plot_cka({"x": {"forget": cka_frame(layers)}}, tmp_path / "bad")


def test_plot_continual(tmp_path):
    rows = []
    for method, seed, request in itertools.product(["NegGrad", "ADV+IMP"], [0, 1], [1, 2, 3]):
        splits = ["retain", "test"] + [f"forget_{i}" for i in range(1, request + 1)]
        rows += [dict(method=method, seed=seed, request=request, split=s,
                      accuracy=RNG.uniform()) for s in splits]
    check_written(figures.plot_continual(pd.DataFrame(rows), tmp_path / "continual"),
                  tmp_path / "continual")
    with pytest.raises(ValueError, match="missing \\['seed'\\]"):
        figures.plot_continual(pd.DataFrame(rows).drop(columns="seed"), tmp_path / "bad")


def test_plot_method_table(tmp_path):
    rows = [dict(method=m, k=k, split=s, seed=seed, accuracy=RNG.uniform())
            for m in ("NegGrad", "ADV", "ADV+IMP") for k in (1, 16, 128)
            for s in ("forget", "retain", "test") for seed in (0, 1)]
    check_written(figures.plot_method_table(pd.DataFrame(rows), tmp_path / "table"),
                  tmp_path / "table")


def test_plot_tradeoff(tmp_path):
    table = pd.DataFrame({"method": ["NegGrad", "ADV+IMP", "ADV+IMP", "Finetune"],
                          "utility": [0.6, 0.85, 0.87, 0.9], "mia_gap": [0.2, 0.05, 0.07, 0.1],
                          "needs_retain": [False, False, False, True]})
    check_written(figures.plot_tradeoff(table, tmp_path / "tradeoff"), tmp_path / "tradeoff")


def test_no_global_backend_or_style_change(tmp_path):
    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    figures.plot_training_curve(pd.DataFrame({"epoch": [1], "train_loss": [1.0], "train_acc": [0.5],
                                              "test_acc": [0.5]}), tmp_path / "c")
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc


def test_same_data_gives_byte_identical_files(tmp_path):
    t = pd.DataFrame(dict(method=["a", "b"] * 2, k=[8, 8, 32, 32], split="forget",
                          accuracy=[0.0, 0.5, 0.2, 0.0]))
    first = figures.plot_method_table(t, tmp_path / "one" / "fig")
    second = figures.plot_method_table(t, tmp_path / "two" / "fig")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert b"CreationDate" not in first[1].read_bytes()


def test_panels_of_runs_that_did_not_reach_are_marked():
    assert figures._marked("ADV", False) == "ADV" + figures.NOT_REACHED
    assert figures._marked("ADV", True) == figures._marked("ADV", None) == "ADV"


@pytest.fixture
def drawn(monkeypatch):
    """The figures drawn (not saved): their panel titles and bars can be read back."""
    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: figs.append(fig) or [])
    return figs


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_not_reached_appears_in_panel_titles(tmp_path, drawn):
    layers = ["net.layer1", "net.layer2"]
    figures.plot_cka({"NegGrad": {"forget": cka_frame(layers), "retain": cka_frame(layers),
                                  "reached": False},
                      "ADV+IMP": {"forget": cka_frame(layers), "retain": cka_frame(layers),
                                  "reached": True}}, tmp_path / "cka")
    figures.plot_confusion({"NegGrad": np.eye(3), "ADV": np.eye(3)}, tmp_path / "conf",
                           reached={"NegGrad": True, "ADV": False})
    n = 6
    figures.plot_tsne({"ADV": dict(xy=RNG.normal(size=(n, 2)), labels=np.arange(n) % 2,
                                   is_forget=np.arange(n) < 2, reached=False)}, tmp_path / "ts")
    rows = [dict(method=m, seed=0, request=r, split=s, accuracy=0.5, reached=m == "ADV+IMP")
            for m in ("NegGrad", "ADV+IMP") for r in (1, 2) for s in ("retain", "forget_1")]
    figures.plot_continual(pd.DataFrame(rows), tmp_path / "cont")
    mark = figures.NOT_REACHED
    assert titles(drawn[0]) == ["NegGrad" + mark, "ADV+IMP"]
    assert titles(drawn[1]) == ["NegGrad", "ADV" + mark]
    assert titles(drawn[2]) == ["ADV" + mark]
    assert titles(drawn[3]) == ["NegGrad" + mark, "ADV+IMP"]


def test_method_table_hatches_not_reached_and_labels_zero_bars(tmp_path, drawn):
    t = pd.DataFrame(dict(method=["before", "a", "b"], k=8, split="forget",
                          accuracy=[1.0, 0.0, 0.3], reached=[np.nan, True, False]))
    figures.plot_method_table(t, tmp_path / "fig")
    ax = drawn[0].axes[0]
    assert [bar.get_hatch() for c in ax.containers for bar in c] == [None, None, "///"]
    assert ax.get_ylabel() == "accuracy (%)"
    assert [txt.get_text() for txt in ax.texts] == ["100", "0", "30"]  # a 0 bar still reads


def test_method_table_gives_each_of_more_than_ten_methods_its_own_colour(tmp_path, drawn):
    # the default palette repeats after ten colours; a sweep of 11+ configs must not
    methods = [f"config {i}" for i in range(12)]
    rows = [dict(method=m, k=32, split="test", accuracy=0.5, reached=True) for m in methods]
    figures.plot_method_table(pd.DataFrame(rows), tmp_path / "many")
    legend = drawn[0].legends[0]
    colours = {tuple(h.get_facecolor()) for h in legend.legend_handles}
    assert [t.get_text() for t in legend.get_texts()] == methods and len(colours) == 12
    bars = {tuple(b.get_facecolor()) for b in drawn[0].axes[0].patches}
    assert bars == colours                                # the bars use the legend's colours
