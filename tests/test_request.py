"""kit.core.request: drawing, validating and sequencing deletion requests."""
import numpy as np
import pytest
import torch

from kit.core.request import (ForgetRequest, check_forget_tensors, request_indices,
                              retain_complement, sample_forget, subsample)


def test_request_sequence_disjoint_sizes_and_seed():
    reqs = request_indices(100, k=7, n_requests=5, seed=3)
    assert len(reqs) == 5 and all(r.shape == (7,) and r.dtype == np.int64 for r in reqs)
    union = np.concatenate(reqs)
    assert len(np.unique(union)) == 35 and union.min() >= 0 and union.max() < 100
    again = request_indices(100, k=7, n_requests=5, seed=3)
    assert all((a == b).all() for a, b in zip(reqs, again))
    other = request_indices(100, k=7, n_requests=5, seed=4)
    assert any((a != b).any() for a, b in zip(reqs, other))
    # the first request is the single-request forget set of the same seed
    assert (reqs[0] == sample_forget(100, 7, seed=3)[0]).all()
    # exactly filling the training set is allowed: a partition
    full = request_indices(12, k=4, n_requests=3, seed=0)
    assert sorted(np.concatenate(full).tolist()) == list(range(12))


def test_request_sequence_too_many_raises_with_range():
    with pytest.raises(ValueError, match=r"1 <= k <= 3 .*1 <= n_requests <= 2 .*disjoint=False"):
        request_indices(10, k=4, n_requests=3)
    with pytest.raises(ValueError, match="k=11"):
        request_indices(10, k=11, n_requests=1, disjoint=False)
    with pytest.raises(ValueError, match="n_requests"):
        request_indices(10, k=1, n_requests=0)


def test_request_sequence_independent_may_overlap():
    reqs = request_indices(10, k=6, n_requests=3, seed=1, disjoint=False)  # 18 > 10: must overlap
    assert all(len(np.unique(r)) == 6 for r in reqs)            # no duplicate inside a request
    assert len(np.unique(np.concatenate(reqs))) < 18
    again = request_indices(10, k=6, n_requests=3, seed=1, disjoint=False)
    assert all((a == b).all() for a, b in zip(reqs, again))
    assert (reqs[0] == request_indices(10, k=6, n_requests=1, seed=1)[0]).all()


def test_retain_complement_by_hand():
    assert retain_complement(8, np.array([1, 5]), np.array([5, 7])).tolist() == [0, 2, 3, 4, 6]
    assert retain_complement(4).tolist() == [0, 1, 2, 3]




# ---------------------------------------------------------------- ForgetRequest
def test_draw_is_seeded_prefix_consistent_and_complementary(mnist5k):
    a = ForgetRequest.draw(mnist5k, 8, seed=3)
    b = ForgetRequest.draw(mnist5k, 32, seed=3)
    assert (b.forget_idx[:8] == a.forget_idx).all()
    assert len(np.intersect1d(a.forget_idx, a.retain_idx)) == 0
    assert len(a.forget_idx) + len(a.retain_idx) == len(mnist5k.train)
    assert a.x.shape == (8, 1, 28, 28) and a.k == 8 and torch.equal(a.target, a.y)
    again = ForgetRequest.draw(mnist5k, 8, seed=3)
    assert (again.forget_idx == a.forget_idx).all() and torch.equal(again.x, a.x)


def test_relabel_request_names_another_class(mnist5k):
    r = ForgetRequest.draw(mnist5k, 40, seed=1, objective="relabel")
    assert r.new_labels is not None and (r.new_labels != r.y).all()
    assert torch.equal(r.target, r.new_labels)


def test_from_ids_validates(mnist5k):
    r = ForgetRequest.from_ids(mnist5k, [5, 0, 9])
    assert r.forget_idx.tolist() == [5, 0, 9] and 5 not in r.retain_idx
    for bad, match in [([1, 1], "duplicates"), ([4000], "out of range"), ([0.5], "integers"),
                       ([], "non-empty")]:
        with pytest.raises(ValueError, match=match):
            ForgetRequest.from_ids(mnist5k, np.asarray(bad))
    with pytest.raises(ValueError, match="equal the true label"):
        y = ForgetRequest.from_ids(mnist5k, [0, 1]).y
        ForgetRequest.from_ids(mnist5k, [0, 1], objective="relabel", new_labels=y)


def test_sequence_retain_shrinks_and_relabel_marks(mnist5k):
    reqs = ForgetRequest.sequence(mnist5k, k=10, n_requests=3, seed=2, relabel=(2,))
    assert [q.objective for q in reqs] == ["misclassify", "relabel", "misclassify"]
    assert [q.seed for q in reqs] == [3, 4, 5]
    assert [len(q.retain_idx) for q in reqs] == [3990, 3980, 3970]
    assert (reqs[0].forget_idx == ForgetRequest.draw(mnist5k, 10, seed=2).forget_idx).all()


def test_subsample_is_seeded_sorted_and_bounded():
    idx = np.arange(100, 200)
    a, b = subsample(idx, 10, seed=1), subsample(idx, 10, seed=1)
    assert (a == b).all() and len(a) == 10 and (np.diff(a) > 0).all() and np.isin(a, idx).all()
    assert (subsample(idx, None, seed=0) == idx).all() and len(subsample(idx, 500, seed=0)) == 100
    with pytest.raises(ValueError, match="n >= 1"):
        subsample(idx, 0, seed=0)


@pytest.mark.parametrize("x, y, match", [
    (torch.full((2, 1, 4, 4), float("nan")), torch.tensor([0, 1]), "NaN"),
    (torch.rand(2, 1, 4, 4) * 3, torch.tensor([0, 1]), r"\[0, 1\]"),
    (torch.rand(2, 1, 4, 4), torch.tensor([[0], [1]]), "shape"),
    (torch.rand(2, 1, 4, 4), torch.tensor([0.0, 2.7]), "integer"),
    (np.random.rand(2, 1, 4, 4), torch.tensor([0, 1]), "torch.Tensor"),
    (torch.rand(2, 4, 4), torch.tensor([0, 1]), "k, C, H, W"),
    (torch.rand(2, 1, 4, 4), torch.tensor([0, 10]), "out of range"),
])
def test_check_forget_tensors_rejects_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        check_forget_tensors(x, y, num_classes=10)
