"""Tests for kit.losses: objectives, masking, and the importance penalty (CPU, hand values)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kit.method.losses import (OBJECTIVES, adversarial_loss, get_objective, importance_penalty,
                        misclassification_loss, relabel_loss, snapshot)

# rows 0 and 2 are predicted as their label 0 / 2; row 1 (label 1) is predicted as 0
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [1.5, 0.2, 0.1], [0.0, -0.3, 0.9]])
LABELS = torch.tensor([0, 1, 2])


def test_misclassification_is_negative_ce():
    ce = F.cross_entropy(LOGITS, LABELS)
    torch.testing.assert_close(misclassification_loss(LOGITS, LABELS), -ce)
    torch.testing.assert_close(relabel_loss(LOGITS, LABELS), ce)
    torch.testing.assert_close(adversarial_loss(LOGITS, LABELS), ce)
    # hand value for a single row: -CE = log softmax(o)_y
    o = LOGITS[0]
    hand = o[0] - torch.log(torch.exp(o).sum())
    torch.testing.assert_close(misclassification_loss(o[None], LABELS[:1]), hand)


def test_misclassification_active_only_masks():
    logits = LOGITS.clone().requires_grad_(True)
    loss = misclassification_loss(logits, LABELS, active_only=True)
    torch.testing.assert_close(loss, -F.cross_entropy(LOGITS[[0, 2]], LABELS[[0, 2]]))
    loss.backward()
    assert torch.equal(logits.grad[1], torch.zeros(3))  # already misclassified: not pushed
    assert logits.grad[[0, 2]].abs().sum() > 0


def test_relabel_active_only_masks():
    new = torch.tensor([0, 2, 1])  # row 0 already predicted as its new label
    logits = LOGITS.clone().requires_grad_(True)
    loss = relabel_loss(logits, new, active_only=True)
    torch.testing.assert_close(loss, F.cross_entropy(LOGITS[[1, 2]], new[[1, 2]]))
    loss.backward()
    assert torch.equal(logits.grad[0], torch.zeros(3))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_nothing_active_gives_exact_zero_with_grad(name):
    preds = LOGITS.argmax(1)
    labels = (preds + 1) % 3 if name == "misclassify" else preds  # all done already
    logits = LOGITS.clone().requires_grad_(True)
    loss = get_objective(name)(logits, labels, active_only=True)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(LOGITS))


def test_get_objective_lists_names():
    with pytest.raises(ValueError, match="misclassify.*relabel"):
        get_objective("negrad")


def _model():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).view_as(p) * 0.1 + i)
    return model


def test_snapshot_is_detached_copy():
    model = _model()
    snap = snapshot(model)
    assert list(snap) == [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(snap["0.weight"], model[0].weight)
    assert not any(v.requires_grad for v in snap.values())


def test_penalty_hand_computed():
    model = _model()
    anchor = snapshot(model)
    with torch.no_grad():
        model[0].weight.copy_(anchor["0.weight"] + torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        model[1].weight.add_(3.0)  # not in weights: not penalised
        model[0].bias.add_(torch.tensor([1.0, 1.0]))
    weights = {"0.weight": torch.tensor([[1.0, 0.5], [0.0, 1.0]]), "0.bias": torch.tensor([0.0, 0.2])}
    # sum w d^2 = 1*1 + 0.5*4 + 0*0.25 + 1*0 + 0*1 + 0.2*1 = 3.2; /2 * lam
    torch.testing.assert_close(importance_penalty(model, anchor, weights, lam=2.0), torch.tensor(3.2))
    torch.testing.assert_close(importance_penalty(model, anchor, weights), torch.tensor(1.6))
    assert importance_penalty(model, anchor, {}).item() == 0.0


def test_penalty_sgd_pulls_back_weighted_entries_only():
    model = _model()
    anchor = snapshot(model)
    perturbation = torch.tensor([[0.5, -0.5], [0.3, 0.7]])
    with torch.no_grad():
        model[0].weight.add_(perturbation)
    start = model[0].weight.detach().clone()
    weights = {"0.weight": torch.tensor([[1.0, 0.0], [0.5, 0.0]])}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        importance_penalty(model, anchor, weights, lam=1.0).backward()
        opt.step()
    dist = model[0].weight.detach() - anchor["0.weight"]
    # d_{t+1} = (1 - lr * lam * w) d_t
    torch.testing.assert_close(dist, perturbation * (1 - 0.1 * weights["0.weight"]) ** 20)
    assert dist[0, 0].abs() < 0.13 * 0.5  # w = 1: 0.9^20 = 0.12 of the way left
    assert torch.equal(model[0].weight[:, 1], start[:, 1])  # w = 0: stays exactly where it is
    assert torch.equal(model[1].weight, anchor["1.weight"])


def test_penalty_bad_names_and_shapes():
    model = _model()
    anchor = snapshot(model)
    with pytest.raises(KeyError, match="nope"):
        importance_penalty(model, anchor, {"nope": torch.ones(1)})
    with pytest.raises(ValueError, match="shape"):
        importance_penalty(model, anchor, {"0.bias": torch.ones(3)})


def test_distillation_temperature_by_hand():
    # soft targets at T: T^2 * mean_i sum_j -p_ij log softmax(z_i / T)_j
    T = 4.0
    teacher = torch.tensor([[3.0, 0.0, -1.0], [0.5, 2.0, 0.0], [0.0, 0.0, 1.0]])
    p = (teacher / T).softmax(1)
    hand = T * T * -(p * (LOGITS / T).log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(adversarial_loss(LOGITS, p, temperature=T), hand)
    # at the teacher's own logits the gradient vanishes (KL minimum), whatever T
    z = teacher.clone().requires_grad_(True)
    adversarial_loss(z, p, temperature=T).backward()
    assert z.grad.abs().max() < 1e-6
    # hard labels ignore the temperature: the paper's L_adv stays CE
    torch.testing.assert_close(adversarial_loss(LOGITS, LABELS, temperature=T),
                               F.cross_entropy(LOGITS, LABELS))


def test_margin_active_only_averages_over_the_instances_still_pushed():
    from kit.method.losses import misclassification_margin_loss, relabel_margin_loss
    # margins z_y - max_other: row 0 2.0 - 0.5 = 1.5, row 1 0.2 - 1.5 = -1.3, row 2 0.9 - 0 = 0.9
    hinge = torch.tensor([1.5 + 0.1, 0.0, 0.9 + 0.1])
    torch.testing.assert_close(misclassification_margin_loss(LOGITS, LABELS, margin=0.1),
                               hinge.mean())
    torch.testing.assert_close(
        misclassification_margin_loss(LOGITS, LABELS, margin=0.1, active_only=True),
        hinge.sum() / 2)
    # nothing left to push: exactly 0, still differentiable
    done = LOGITS.clone().requires_grad_(True)
    loss = misclassification_margin_loss(done, torch.tensor([2, 1, 0]), margin=0.1,
                                         active_only=True)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(done.grad.abs().sum()) == 0.0
    # relabel: row 0 already predicts its new label 0 by 1.5 logits
    new = torch.tensor([0, 2, 1])
    full = relabel_margin_loss(LOGITS, new, margin=0.1)
    active = relabel_margin_loss(LOGITS, new, margin=0.1, active_only=True)
    torch.testing.assert_close(active, full * 3 / 2)
