"""Two real CPU processes under torchrun (gloo): replicas stay identical, only rank 0 writes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_two_process_gloo_training(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training.train", "--task", "phantom", "--out", str(out), "--device", "cpu",
        "--max-steps", "3", "--val-every", "3", "--phantom-train", "2", "--phantom-val", "2",
        "--phantom-size", "64x64x40", "--network", '{"second_tom": false}', "--threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, encoding="utf-8", timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["settings"]["world_size"] == 2
    digests = run["finished"]["replica_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # parameters identical on both ranks

    # Only rank 0 wrote: one TensorBoard writer, one CSV row per step, one "done" line.
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    with open(out / "log.csv", newline="", encoding="utf-8") as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == [1, 2, 3]
    assert (done.stdout + done.stderr).count("done: 3 steps") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "best.safetensors", "log.csv", "phantom-data", "resume.safetensors", "run.json",
        "tensorboard",
    ]  # fmt: skip
    # Each rank trained on its own half of the training phantoms each epoch.
    assert run["steps_per_epoch"] == 1 and run["training_cases"] == 2
