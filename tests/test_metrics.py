import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from kit.core.predict import predict_logits, predict_proba
from kit.evaluation.metrics import agreement, compare_to_reference, mean_kl


from _tiny import tiny_data as _data  # noqa: E402
from _tiny import tiny_model as _tiny_model  # noqa: E402


def test_agreement_by_hand():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    q = np.array([[0.5, 0.4, 0.1], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1]])
    assert agreement(p, q) == 0.5  # rows 0 and 2 agree
    assert agreement(p, p) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        agreement(p, q[:3])


def test_mean_kl_by_hand():
    p_ref = np.array([[0.5, 0.5], [0.8, 0.2]])
    p = np.array([[0.9, 0.1], [0.8, 0.2]])
    row0 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # 0.510826
    assert mean_kl(p_ref, p) == pytest.approx(row0 / 2, abs=1e-12)
    assert mean_kl(p, p_ref) == pytest.approx((0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)) / 2)
    assert mean_kl(p_ref, p_ref) == 0.0
    # zero probabilities: 0 where p_ref is 0, log(1/eps) where only p is 0
    assert mean_kl(np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]])) == pytest.approx(math.log(2))
    assert mean_kl(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), eps=1e-12) == pytest.approx(-math.log(1e-12))


def test_predict_proba_forms_and_mode():
    model = _tiny_model()
    x, y = _data(23, 1)
    model.train()
    probs, labels = predict_proba(model, (x, y), batch_size=5)
    assert model.training
    assert probs.shape == (23, 3) and np.allclose(probs.sum(1), 1)
    np.testing.assert_array_equal(labels, y.numpy())
    probs_ds, _ = predict_proba(model, TensorDataset(x, y), batch_size=8)
    np.testing.assert_allclose(probs_ds, probs, rtol=1e-6)


def test_predict_logits_on_cpu_runs_channels_last_and_puts_the_layout_back():
    # the CPU evaluation runs a conv net in channels_last (speed); the caller's model keeps
    # its own layout, and the logits equal those of a plain pass up to float round-off
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = _data(37, 2)
    with torch.no_grad():
        plain = conv(x)
    for batch in (0, 5):                                    # 0: the device's own batch size
        logits, labels = predict_logits(conv, (x, y), batch_size=batch)
        torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(labels, y)
        assert all(p.is_contiguous() for p in conv.parameters())
    conv.to(memory_format=torch.channels_last)              # a model already in channels_last
    predict_logits(conv, (x, y))
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv[0].weight.is_contiguous()


def test_compare_model_with_itself_and_known_accuracy():
    model = _tiny_model(0)
    x, _ = _data(40, 1)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.where(torch.arange(40) < 30, pred, (pred + 1) % 3)  # model right on exactly 30/40
    same = compare_to_reference(model, model, splits={"forget": (x, y), "test": TensorDataset(x, y)})
    assert list(same["split"]) == ["forget", "test"]
    assert (same["gap"] == 0).all() and (same["agreement"] == 1).all() and (same["kl"] == 0).all()
    assert (same["acc"] == 0.75).all() and (same["n"] == 40).all()

    other = _tiny_model(1)
    row = compare_to_reference(model, other, splits={"forget": (x, y)}).iloc[0]
    p, _ = predict_proba(model, (x, y))
    q, _ = predict_proba(other, (x, y))
    acc_ref = float((q.argmax(1) == y.numpy()).mean())
    assert row["acc_ref"] == pytest.approx(acc_ref) and row["gap"] == pytest.approx(abs(0.75 - acc_ref))
    assert row["agreement"] == pytest.approx(agreement(p, q))
    assert row["kl"] == pytest.approx(mean_kl(q, p)) and row["kl"] > 0
    with pytest.raises(ValueError, match="splits is empty"):
        compare_to_reference(model, other, splits={})
