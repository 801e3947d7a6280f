"""The README's quick start runs as written: a torchvision model trained outside the kit, a
generated ImageFolder, ids to forget, unlearned weights in the user's own format."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- quick-start -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its quick-start block (marked <!-- quick-start -->)"
    return m.group(1)


def test_quick_start_runs_and_writes_weights_in_the_users_format(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for c in ("cat", "dog"):
            d = tmp_path / "my_images" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(d / f"{i}.png")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "my_weights.pt")
    (tmp_path / "quick.py").write_text(_quick_start())
    res = subprocess.run([sys.executable, "quick.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "KIT_QUIET": "1",
                                                      "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split()[0] == "True"                      # the objective was reached
    fresh = torchvision.models.resnet18(num_classes=2)
    fresh.load_state_dict(torch.load(tmp_path / "my_weights_unlearned.pt"), strict=True)
    before = torch.load(tmp_path / "my_weights.pt")
    assert any(not torch.equal(before[k], v) for k, v in fresh.state_dict().items())
