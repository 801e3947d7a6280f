"""Tests for kit.checkpoint: round trip, weights_only loading, mismatches named (CPU)."""
import json

import pytest
import torch
from torch.utils.data import TensorDataset

import kit
from kit.core.checkpoint import (check_compatible, file_sha256, load_checkpoint, read_sidecar,
                                 save_checkpoint)
from kit.core.data import DataBundle
from kit.core.models import create_model

MEAN, STD = (0.1307,), (0.3081,)


def _model():
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, in_channels=1, image_size=28, mean=MEAN, std=STD)
    model.train()
    with torch.no_grad():                                 # non-default BatchNorm statistics
        model(torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = _model()
    path = save_checkpoint(model, tmp_path / "ckpt" / "cnn.pt", dataset="mnist5k", seed=3,
                           metrics={"test_acc": 0.98}, extra={"epochs": 10})
    return model, path


def _save_tampered(state, path):
    """Replace the weights and update the sidecar's hash: a consistent but wrong checkpoint."""
    torch.save(state, path)
    _rewrite_sidecar(path, sha256=file_sha256(path))


def _rewrite_sidecar(path, **changes):
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.update(changes)
    side.write_text(json.dumps(meta))


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded = load_checkpoint(path)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded.config == model.config


def test_sidecar_records_how_the_model_was_made(saved):
    _, path = saved
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta == read_sidecar(path)
    assert (meta["arch"], meta["dataset"], meta["num_classes"], meta["seed"]) == (
        "cnn", "mnist5k", 10, 3)
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)
    assert meta["metrics"] == {"test_acc": 0.98} and meta["epochs"] == 10
    assert meta["versions"]["torch"] == torch.__version__ and "kit" in meta["versions"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["cnn.json", "cnn.pt"]  # no .tmp


_CALLS = []


def _side_effect(*args):
    _CALLS.append(args)
    return {}


class _Payload:
    """Unpickling this would call _side_effect; a weights_only load must refuse first."""

    def __reduce__(self):
        return _side_effect, ("ran",)


def test_loading_is_weights_only(saved):
    import pickle

    _, path = saved
    _save_tampered({"net.fc2.weight": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        load_checkpoint(path)
    assert _CALLS == []


@pytest.mark.parametrize("key, want", [("arch", "resnet18_cifar"), ("dataset", "cifar10"),
                                       ("num_classes", 100)])
def test_requesting_other_arch_dataset_or_classes_is_a_mismatch(saved, key, want):
    _, path = saved
    have = {"arch": "cnn", "dataset": "mnist5k", "num_classes": 10}[key]
    with pytest.raises(kit.CheckpointMismatch) as err:
        load_checkpoint(path, **{key: want})
    assert f"{key}={have!r}" in str(err.value) and f"{key}={want!r}" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_matching_request_loads(saved):
    _, path = saved
    load_checkpoint(path, arch="cnn", dataset="mnist5k", num_classes=10)


@pytest.mark.parametrize("changes, words", [
    ({"num_classes": 5}, "wrong shapes"),                  # fc2 is (10, 128), not (5, 128)
    ({"image_size": 32}, "wrong shapes"),                  # fc1 sees 8x8, not 7x7, maps
    ({"arch": "resnet18_cifar"}, "missing"),
])
def test_weights_that_do_not_fit_the_sidecar(saved, changes, words):
    _, path = saved
    _rewrite_sidecar(path, **changes)
    with pytest.raises(kit.CheckpointMismatch, match=words) as err:
        load_checkpoint(path)
    assert "re-save" in str(err.value)


def test_missing_or_unexpected_weights(saved):
    model, path = saved
    state = model.state_dict()
    _save_tampered({k: v for k, v in state.items() if k != "net.fc1.bias"}, path)
    with pytest.raises(kit.CheckpointMismatch, match=r"missing \['net.fc1.bias'\]"):
        load_checkpoint(path)
    _save_tampered({**state, "net.extra": torch.zeros(1)}, path)
    with pytest.raises(kit.CheckpointMismatch, match=r"unexpected \['net.extra'\]"):
        load_checkpoint(path)


def test_missing_file_and_missing_sidecar(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="does not exist; pre-train one"):
        load_checkpoint(tmp_path / "nothing.pt")
    _, path = saved
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no sidecar .*cnn\.json.*save_checkpoint"):
        load_checkpoint(path)


def _bundle(num_classes=10, in_channels=1, image_size=28):
    data = TensorDataset(torch.zeros(2, in_channels, image_size, image_size), torch.zeros(2))
    return DataBundle("toy", data, data, num_classes, [str(i) for i in range(num_classes)],
                      in_channels, image_size, (0.5,) * in_channels, (0.5,) * in_channels)


def test_check_compatible(saved):
    model, path = saved
    check_compatible(model, _bundle())
    check_compatible(read_sidecar(path), _bundle())
    with pytest.raises(kit.CheckpointMismatch, match=r"num_classes=10 but data set 'toy' has "
                                                      r"num_classes=100"):
        check_compatible(model, _bundle(num_classes=100))
    with pytest.raises(kit.CheckpointMismatch, match="in_channels"):
        check_compatible(read_sidecar(path), _bundle(in_channels=3))
    with pytest.raises(kit.CheckpointMismatch, match="image_size"):
        check_compatible(model, _bundle(image_size=32))


def test_swapped_or_truncated_weights_are_refused(saved):
    model, path = saved
    torch.save(model.state_dict(), path)              # other bytes than the sidecar's hash
    with pytest.raises(kit.CheckpointMismatch, match="sha256 differs"):
        load_checkpoint(path)
    path.write_bytes(b"")
    _rewrite_sidecar(path, sha256=file_sha256(path))
    with pytest.raises(kit.CheckpointMismatch, match="cannot be read"):
        load_checkpoint(path)


def test_save_refuses_a_non_pt_path(tmp_path):
    with pytest.raises(ValueError, match=r"\.pt"):
        save_checkpoint(_model(), tmp_path / "x.json", dataset="mnist5k")
