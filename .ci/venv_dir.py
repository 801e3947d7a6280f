"""Where CI builds the kit's environment; prints the path for `make test VENV=...`.

`.venv` beside the checkout, as `make test` does by default, unless that disk has less free
space than a new environment takes (torch 2.14.1 is a CUDA build: about 6.3 GB; a CI
machine had 3.6 GB free on 2026-12-01, and the Makefile's disk check refused, exit 2) and
memory-backed /dev/shm has room for it with memory to spare for the tests: then a folder
there (gone with the machine, which CI does not keep). An existing .venv is always used.

    python3 .ci/venv_dir.py CHECKOUT NEED_GB
"""
import os
import shutil
import sys

SHM = "/dev/shm"
SPARE_GB = 8.0     # memory the test suite keeps beside the environment (two workers)


def available_memory_gb(meminfo="/proc/meminfo"):
    """MemAvailable in GB; 0 where the kernel does not say (then /dev/shm is not used)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 0.0


def venv_dir(checkout, need_gb, shm=SHM, memory_gb=None):
    venv = os.path.join(checkout, ".venv")
    if os.path.exists(os.path.join(venv, "bin", "python")):
        return venv
    if shutil.disk_usage(checkout).free / 1e9 >= need_gb or not os.path.isdir(shm):
        return venv                          # room beside the checkout, or nowhere else to go
    memory_gb = available_memory_gb() if memory_gb is None else memory_gb
    if shutil.disk_usage(shm).free / 1e9 >= need_gb and memory_gb >= need_gb + SPARE_GB:
        return os.path.join(shm, "kit-ci-venv")
    return venv                              # the Makefile's disk check says what is missing


if __name__ == "__main__":
    print(venv_dir(os.path.abspath(sys.argv[1]), float(sys.argv[2])))
