"""training.evaluate, metrics, co2, efficiency and plot: real files, real subprocesses."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segresmamba.io import write_image, write_labelmap
from segresmamba.network import SegResMamba
from segresmamba.phantom import make_phantom
from segresmamba.tasks import get_task
from segresmamba.weights import make_header, save_checkpoint
from training.co2 import PAPER_TABLE5, co2_kg, table5
from training.co2 import main as co2_main
from training.evaluate import main as evaluate
from training.metrics import case_metrics, markdown_table, summarise, table_columns
from training.plot import main as plot

REPO = Path(__file__).resolve().parents[1]


def test_dice_and_hd95_on_known_shapes() -> None:
    truth = np.zeros((20, 20, 20), bool)
    truth[5:15, 5:15, 5:15] = True
    shifted = np.roll(truth, 2, axis=2)  # 2 voxels along x
    same = case_metrics({"a": truth}, {"a": truth}, (2.0, 1.0, 1.5))["a"]
    assert same == {"dice": 1.0, "hd95": 0.0}
    moved = case_metrics({"a": shifted}, {"a": truth}, (2.0, 1.0, 1.5))["a"]
    assert moved["dice"] == pytest.approx(0.8)
    assert moved["hd95"] == pytest.approx(3.0)  # 2 voxels x 1.5 mm
    empty = case_metrics({"a": np.zeros_like(truth)}, {"a": truth}, (1, 1, 1))["a"]
    assert empty["dice"] == 0.0 and math.isinf(empty["hd95"])


def test_tables_follow_the_paper_layouts() -> None:
    summaries = {
        name: summarise(
            [{n: {"dice": 0.9, "hd95": 2.0} for n, _ in table_columns(get_task(name))}],
            [n for n, _ in table_columns(get_task(name))],
        )
        for name in ("btcv", "brats", "spleen")
    }
    for name in summaries:
        summaries[name]["dice"].setdefault("mean", 0.9)
        summaries[name]["hd95"].setdefault("mean", 2.0)
    btcv = markdown_table(get_task("btcv"), summaries["btcv"], "ours").splitlines()[0]
    assert btcv.startswith("| Model | spleen | right kidney |") and btcv.endswith("| Avg Dice |")
    brats = markdown_table(get_task("brats"), summaries["brats"], "ours").splitlines()
    assert brats[0] == "| Model | Mean Dice | Dice TC | Dice WT | Dice ET |"
    spleen = markdown_table(get_task("spleen"), summaries["spleen"], "ours").splitlines()
    assert spleen[0] == "| Model | Avg Dice |" and spleen[2] == "| ours | 0.9000 |"


def test_evaluate_a_tiny_case_through_segment(tmp_path: Path, capsys) -> None:
    task = get_task("phantom")
    ct, truth = make_phantom(7, size=(64, 64, 40))
    write_image(ct, tmp_path / "ct.nii.gz")
    write_labelmap(truth, tmp_path / "label.nii.gz", task)
    datalist = {"validation": [{"case": "p7", "image": "ct.nii.gz", "label": "label.nii.gz"}]}
    (tmp_path / "list.json").write_text(json.dumps(datalist), encoding="utf-8")
    torch.manual_seed(0)
    network = {"widths": [8, 16, 32, 64], "second_tom": False}
    model = SegResMamba(in_channels=1, out_channels=6, **network)
    header = make_header(task, network, {"dataset": "test", "steps": 0})
    save_checkpoint(tmp_path / "tiny.safetensors", model, header)
    out = tmp_path / "eval"
    argv = ["--task", "phantom", "--data", str(tmp_path / "list.json"), "--model",
            str(tmp_path / "tiny.safetensors"), "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert evaluate(argv) == 0
    markdown = (out / "summary.md").read_text(encoding="utf-8")
    assert "| Model | liver | spleen | right kidney | left kidney | aorta | Avg Dice |" in markdown
    assert (
        "| Model | liver | spleen | right kidney | left kidney | aorta | Avg HD95 (mm) |"
        in markdown
    )
    with open(out / "per_case.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [r["case"] for r in rows] == ["p7"] and "hd95_aorta" in rows[0]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert 0.0 <= summary["summary"]["dice"]["mean"] <= 1.0
    assert "mean Dice" in capsys.readouterr().out


def test_co2_arithmetic_and_table5() -> None:
    assert co2_kg(74.40, 250, 0.61) == pytest.approx(11.346)
    assert co2_kg(10, 300, 0.5, pue=1.5) == pytest.approx(2.25)
    for row in table5():
        for provider in ("Azure", "Google", "Amazon"):
            assert row[provider] == pytest.approx(row[f"{provider}_paper"], abs=0.006), row
    assert len(table5()) == len(PAPER_TABLE5) == 5
    with pytest.raises(SystemExit):
        co2_main(["--hours", "1"])  # no carbon intensity


def test_efficiency_reuses_bench_workers(tmp_path: Path) -> None:
    out = tmp_path / "eff.json"
    command = [sys.executable, "-m", "training.efficiency", "--device", "cpu", "--datasets",
               "spleen", "--models", "unet", "--size", "32", "--repeats", "1", "--threads", "1",
               "--out-json", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, encoding="utf-8", timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads(out.read_text(encoding="utf-8"))
    row = run["tables"]["spleen"][0]
    assert row["model"] == "unet" and row["params"] > 1e6 and row["macs"] > 0
    assert row["train_peak_memory_gb"] > 0 and row["inference_s_per_patch"] > 0
    assert run["memory_kind"] == "cpu" and "| unet |" in done.stdout
    assert run["paper"]["table7_training_memory_gb"]["spleen"]["unet"] == 0.48

    png = tmp_path / "dice_vs_memory.png"
    assert plot(["--bench", str(out), "--dice", str(REPO / "docs/paper_dice.json"),
                 "--out", str(png)]) == 0  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
