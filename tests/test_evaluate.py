"""Tests for kit.evaluate against a hand-built linear model, and results on disk (CPU)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kit.core.predict import accuracy, batches, predict, predict_logits
from kit.core.results import save_results
from kit.core.utils import eval_mode

# logits = x @ W.T + b, worked out by hand below
W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
B = torch.tensor([0.0, 0.0, 0.5])
X = torch.tensor([[2.0, 1.0],      # [ 2.0, 1.0, -2.5] -> 0
                  [0.0, 3.0],      # [ 0.0, 3.0, -2.5] -> 1
                  [-1.0, -1.0],    # [-1.0, -1.0, 2.5] -> 2
                  [1.0, 2.0],      # [ 1.0, 2.0, -2.5] -> 1
                  [-2.0, 0.5]])    # [-2.0, 0.5,  2.0] -> 2
Y = torch.tensor([0, 1, 2, 0, 1])  # right, right, right, wrong, wrong -> 3/5
LOGITS = torch.tensor([[2.0, 1.0, -2.5], [0.0, 3.0, -2.5], [-1.0, -1.0, 2.5],
                       [1.0, 2.0, -2.5], [-2.0, 0.5, 2.0]])
PRED = [0, 1, 2, 1, 2]


class ModeProbe(nn.Module):
    """Identity that records the train flag and grad mode it saw on each forward."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return x


def _model():
    linear = nn.Linear(2, 3)
    with torch.no_grad():
        linear.weight.copy_(W)
        linear.bias.copy_(B)
    return nn.Sequential(ModeProbe(), linear)


DATA = {"tuple": lambda: (X, Y), "list": lambda: [X, Y], "dataset": lambda: TensorDataset(X, Y)}


@pytest.mark.parametrize("kind", DATA)
@pytest.mark.parametrize("batch_size", [1, 2, 512])
def test_predict_and_accuracy_by_hand(kind, batch_size):
    model = _model()
    logits, labels = predict_logits(model, DATA[kind](), batch_size=batch_size)
    torch.testing.assert_close(logits, LOGITS)
    assert labels.tolist() == Y.tolist()
    pred, labels = predict(model, DATA[kind](), batch_size=batch_size)
    assert isinstance(pred, np.ndarray) and pred.tolist() == PRED
    assert labels.tolist() == Y.tolist()
    assert accuracy(model, DATA[kind](), batch_size=batch_size) == pytest.approx(0.6)


def test_accuracy_edges():
    model = _model()
    assert accuracy(model, (X[:3], Y[:3])) == 1.0
    assert accuracy(model, (X[3:], Y[3:])) == 0.0
    assert np.isnan(accuracy(model, (X[:0], Y[:0])))      # e.g. forgetting the whole set
    assert np.isnan(accuracy(model, TensorDataset(X[:0], Y[:0])))


def test_dataset_with_int_labels():
    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            return X[i], int(Y[i])

    assert predict(_model(), Items(), batch_size=2)[0].tolist() == PRED


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluation_runs_in_eval_mode_without_grad_and_restores_mode(was_training):
    model = _model().train(was_training)
    accuracy(model, (X, Y), batch_size=2)
    assert model[0].seen == [(False, False)] * 3           # 3 batches, eval + inference mode
    assert model.training is was_training and model[1].training is was_training


def test_eval_mode_restores_after_an_error():
    model = _model().train()
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            assert not model.training
            raise RuntimeError("boom")
    assert model.training


def test_batches_keep_order():
    got = list(batches((X, Y), batch_size=2))
    assert [len(y) for _, y in got] == [2, 2, 1]
    assert torch.equal(torch.cat([x for x, _ in got]), X)


# --------------------------------------------------------------------------- save_results
@pytest.mark.parametrize("as_frame", [False, True])
def test_save_results_writes_csv_and_sidecar(tmp_path, as_frame):
    rows = [{"method": "ours", "k": 8, "forget_acc": 0.0},
            {"method": "retrain", "k": 8, "forget_acc": 0.125}]
    config = {"dataset": "mnist5k", "seeds": [0, 1], "eps": 4.0}
    path = save_results(pd.DataFrame(rows) if as_frame else rows,
                        tmp_path / "results" / "table.csv", config=config)
    assert path == tmp_path / "results" / "table.csv"
    pd.testing.assert_frame_equal(pd.read_csv(path), pd.DataFrame(rows))
    side = json.loads((tmp_path / "results" / "table.json").read_text())
    assert side["config"] == config
    assert side["versions"]["torch"] == torch.__version__
    assert {"kit", "torchvision", "numpy", "python"} <= set(side["versions"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv", "table.json"]  # no .tmp
