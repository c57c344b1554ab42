"""``segresmamba bench --device``: the GPU run's code path, rehearsed on the CPU with tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segresmamba.bench.gpu import available_backends

REPO = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "SegResMambaSlicer")}
    return subprocess.run(
        [sys.executable, "-m", "segresmamba.bench", *args],
        capture_output=True, encoding="utf-8", env=env, timeout=600,
    )  # fmt: skip


def test_cpu_rehearsal_writes_the_gpu_schema(tmp_path):
    target = tmp_path / "gpu.json"
    done = bench("--device", "cpu", "--size", "32", "--models", "unet", "--repeats", "1",
                 "--out-json", str(target))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads(target.read_text(encoding="utf-8"))
    assert {"device", "date", "command", "results"} <= set(run)
    assert "--device cpu" in run["command"]
    (row,) = run["results"]
    assert row["model"] == "unet" and row["backend"] is None and row["input"] == [32, 32, 32]
    assert row["params"] > 0 and row["macs"] > 0 and row["train_step_s"] > 0
    assert row["train_peak_mem_gb"] is None  # the allocator's peak exists on CUDA only
    assert set(row["infer_patch_s"]["32x32x32"]) == {"fp32", "bf16"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_device_cuda_without_a_gpu_is_one_clear_line(tmp_path):
    done = bench("--device", "cuda", "--out-json", str(tmp_path / "x.json"))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --device cuda: PyTorch sees no CUDA device here"
    assert not (tmp_path / "x.json").exists()


def test_segresmamba_is_measured_once_per_backend_that_runs():
    assert available_backends("cpu")[0] == "torch"
    assert "triton" not in available_backends("cpu")
