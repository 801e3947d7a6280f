"""Device-generic paths: run on KIT_TEST_DEVICE (default cpu; benchmarks/gpu_check.sh sets
cuda). The device always comes from the model; inputs may live on the CPU."""
import copy
import os

import pytest
import torch

from kit.baselines.oracle import oracle_unlearn
from kit.core.request import ForgetRequest
from kit.evaluation.metrics import split_accuracies
from kit.method.engine import unlearn
from kit.method.recipes import resolve

DEVICE = torch.device(os.environ.get("KIT_TEST_DEVICE", "cpu"))
pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                                reason="KIT_TEST_DEVICE=cuda but no GPU")


@pytest.fixture(scope="module")
def on_device(pretrained_cnn):
    model, data = pretrained_cnn
    return copy.deepcopy(model).to(DEVICE), data, ForgetRequest.draw(data, 8, seed=0)


@pytest.mark.parametrize("method", ["neggrad", "adv+imp"])
def test_engine_runs_where_the_model_lives(on_device, method):
    model, data, req = on_device
    m = copy.deepcopy(model)
    res = unlearn(m, req.x, req.y, method=method, config=resolve("fast", max_steps=50))
    assert next(m.parameters()).device.type == DEVICE.type
    assert res.steps >= 1 and res.final_pred.shape == (8,)
    acc = split_accuracies(m, data, req)
    assert 0 <= acc["forget"] <= 1 and acc["test"] > 0.5


def test_oracle_runs_where_the_model_lives(on_device):
    model, data, req = on_device
    m = copy.deepcopy(model)
    retain = torch.utils.data.Subset(data.train, req.retain_idx.tolist())
    res = oracle_unlearn(m, req.x, req.y, retain=retain, config=resolve("distil", max_steps=20))
    assert res.steps >= 1 and next(m.parameters()).device.type == DEVICE.type


def test_stop_check_where_the_model_lives(on_device):
    # auto (0): exact on a CPU, read every 8 steps on an accelerator; 4: read every 4 steps.
    # Either way the run ends at the first step at which every instance meets the objective
    # (the batched path puts that step's weights back), so with deterministic kernels both
    # end on the same step with the same weights, and "reached" is the truth there
    model, data, req = on_device
    runs = {}
    for every in (1, 0, 4):
        m = copy.deepcopy(model)
        cfg = resolve("fast", max_steps=300, check_every=every, deterministic=True)
        runs[every] = (unlearn(m, req.x, req.y, config=cfg), m)
    exact, _ = runs[1]
    for every, (res, m) in runs.items():
        assert res.reached and res.steps == exact.steps, every
        assert [h["step"] for h in res.history] == list(range(res.steps + 1))
        for a, b in zip(runs[1][1].state_dict().values(), m.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        with torch.no_grad():
            assert (m.eval()(req.x.to(DEVICE)).argmax(1).cpu() != req.y).all()
        assert (res.flip_step >= 0).all() and (res.flip_step <= res.steps).all()
