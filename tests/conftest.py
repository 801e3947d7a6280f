"""Shared fixtures: one torch thread for the whole session, and the embedded mnist5k data.
Progress bars are off (KIT_QUIET=1) unless a test turns them on (test_unlearn checks them)."""
import os

import pytest
import torch

import kit

os.environ.setdefault("KIT_QUIET", "1")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # small models on a shared 2-core machine: a second thread costs far more in hand-offs
    # than it saves (up to 50x slower), so every test runs single-threaded
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist5k():
    """The embedded 5,000-digit MNIST subset, split with the default split_seed=0."""
    return kit.load_dataset("mnist5k")


@pytest.fixture(scope="session")
def pretrained_cnn(mnist5k):
    """The default pre-trained model (small CNN on mnist5k), cached under artifacts/."""
    from kit.experiments.cache import pretrained

    model, data, _ = pretrained(data=mnist5k)
    return model, data
