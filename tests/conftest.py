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


# `make test` runs two workers with `--dist loadgroup --no-loadscope-reorder`: each test file
# stays on one worker (its module fixtures are made once), except the notebook runs (about a
# third of the suite's time, ten tests of 40-110 s on a 2-core machine), one group each, so
# they spread over the workers; the groups go out longest first (the notebook runs, then
# the files that hold the engine's end-to-end runs), so the workers end together.
LONGEST_FIRST = ("tests/test_notebooks.py::test_notebook_runs", "tests/test_unlearn.py",
                 "tests/test_cli.py", "tests/test_hold.py", "tests/test_continual.py",
                 "tests/test_grid.py")


def _group(item) -> str:
    node = item.nodeid
    return node if node.startswith(LONGEST_FIRST[0]) else node.split("::")[0]


def _rank(item) -> int:
    return next((i for i, p in enumerate(LONGEST_FIRST) if item.nodeid.startswith(p)),
                len(LONGEST_FIRST))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Order the tests longest group first and give each its xdist group (see above); a
    stable sort, so the order within a file is the file's own."""
    items.sort(key=_rank)
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(_group(item)))
