"""The benchmark: a real `python -m segresmamba.bench --quick` run, its JSON, and the docs page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segresmamba.bench import report
from segresmamba.bench.options import parse_size
from segresmamba.bench.runner import add_ratios

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO / "SegResMambaSlicer"
DESIGN_PARAMS = 73_548_350
"""Parameters of the default SegResMamba (1 in, 14 out), as the design states."""

RESULT_FIELDS = (
    "model",
    "input",
    "in_channels",
    "out_channels",
    "params",
    "macs",
    "scan_macs",
    "forward_s_median",
    "forward_s_all",
    "peak_rss_gb",
    "rss_before_gb",
)


def _docs_listing() -> dict[str, float]:
    docs = REPO / "docs"
    return {str(p): p.stat().st_mtime for p in docs.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, dict, dict]:
    """One smoke run (64³, 1 repeat) of SegResMamba, its one-ToM variant and UNet."""
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    before = _docs_listing()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segresmamba.bench",
            "--quick",
            "--models",
            "segresmamba,segresmamba-1tom,unet",
            "--no-write",
            "--out-json",
            str(out),
        ],
        capture_output=True,
        encoding="utf-8",
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), done.stderr, before, _docs_listing()


def test_quick_run_writes_every_field(quick_run) -> None:
    run, stderr, _, _ = quick_run
    assert run["settings"]["quick"] is True
    assert run["settings"]["sizes"] == [[64, 64, 64]]
    assert "--quick" in run["command"] and "segresmamba" in run["command"]
    device = run["device"]
    assert device["threads"] == 2 and device["cpu"] and device["torch"]
    assert [r["model"] for r in run["results"]] == ["segresmamba", "segresmamba-1tom", "unet"]
    for result in run["results"]:
        assert not result.get("errors"), result
        for field in RESULT_FIELDS:
            assert field in result, (result["model"], field)
        assert result["input"] == [64, 64, 64]
        assert (result["in_channels"], result["out_channels"]) == (1, 14)
        assert len(result["forward_s_all"]) == 1 and result["forward_s_median"] > 0
        assert result["peak_rss_gb"] >= result["rss_before_gb"] > 0
        assert "train_step_s_median" not in result  # no --train
    assert "scan" not in run
    # Progress goes to stderr, one line per model.
    for name in ("segresmamba", "segresmamba-1tom", "unet"):
        assert f"] {name} 64x64x64 forward" in stderr


def test_segresmamba_macs_include_the_scan(quick_run) -> None:
    results = {r["model"]: r for r in quick_run[0]["results"]}
    full, one_tom, unet = results["segresmamba"], results["segresmamba-1tom"], results["unet"]
    assert full["params"] == DESIGN_PARAMS
    assert full["scan_macs"] > 0
    assert full["macs"] == full["counted_macs"] + full["scan_macs"]
    # 64³: the stem halves to 32³; per stage the first ToM sees (S/2)³, the second S³ tokens.
    tokens = sorted(t["tokens"] for t in full["tom_calls"])
    assert tokens == sorted([16**3, 32**3, 8**3, 16**3, 4**3, 8**3, 2**3, 4**3])
    expected = sum(3 * t["tokens"] * t["d_inner"] * t["d_state"] * 3 for t in full["tom_calls"])
    assert full["scan_macs"] == expected
    assert full["scan_exps"] * 3 == full["scan_macs"]
    # Without the second ToM: fewer parameters, far less scan work, fewer MACs.
    assert one_tom["params"] < full["params"]
    assert 0 < one_tom["scan_macs"] < full["scan_macs"]
    assert one_tom["macs"] < full["macs"]
    assert unet["scan_macs"] == 0 and unet["macs"] == unet["counted_macs"] > 0


def test_quick_run_leaves_docs_alone(quick_run) -> None:
    _, _, before, after = quick_run
    assert before == after


def test_parse_size() -> None:
    assert parse_size("96") == [(96, 96, 96)]
    assert parse_size("96x96x64,128") == [(96, 96, 64), (128, 128, 128)]
    for bad in ("x", "0", "96x96"):
        with pytest.raises(Exception, match="bad size"):
            parse_size(bad)


def test_ratios_and_markdown_section(tmp_path: Path) -> None:
    results = [
        {"model": "segresmamba", "input": [96] * 3, "params": 10, "forward_s_median": 1.0},
        {"model": "swinunetr", "input": [96] * 3, "params": 20, "forward_s_median": 4.0},
        {"model": "unet", "input": [128] * 3, "params": 5, "forward_s_median": 1.0},
    ]
    add_ratios(results)
    assert results[0]["vs_swinunetr"] == {"params": 0.5, "forward_s_median": 0.25}
    assert "vs_swinunetr" not in results[1] and "vs_swinunetr" not in results[2]

    docs = tmp_path / "docs"
    (docs / "benchmarks").mkdir(parents=True)
    (docs / "benchmarks.md").write_text("# Mine\n\nkept\n", encoding="utf-8")
    run = {
        "date": "2025-01-02",
        "command": "segresmamba bench --train",
        "device": {
            "cpu": "Test CPU",
            "threads": 2,
            "logical_cpus": 2,
            "memory_gb": 8,
            "torch": "2",
            "monai": "1",
            "python": "3",
            "load_average_at_start": [0.1, 0.1, 0.1],
        },
        "settings": {
            "repeats": 3,
            "warmup": 1,
            "batch": 1,
            "in_channels": 1,
            "out_channels": 14,
            "quick": False,
        },
        "results": results,
    }
    report.write_json(report.json_path(docs, run["date"]), run)
    with pytest.raises(FileExistsError):
        report.write_json(report.json_path(docs, run["date"]), run)
    md = report.regenerate_markdown(docs)
    first = md.read_text(encoding="utf-8")
    assert first.startswith("# Mine\n\nkept\n")
    assert report.START in first and report.END in first
    assert "Test CPU" in first and "segresmamba bench --train" in first
    assert "fwd time ×0.25" in first and "Median of 3" in first
    assert "benchmarks/2025-01-02-cpu.json" in first
    # Regenerating is idempotent: the section is rebuilt, not appended to.
    assert report.regenerate_markdown(docs).read_text(encoding="utf-8") == first


def test_markdown_rebuild_ignores_json_that_is_not_a_bench_run(tmp_path):
    """Other tools' JSON beside the bench's (e.g. end-to-end runs) must not break the rebuild."""
    from segresmamba.bench.report import regenerate_markdown

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "2026-01-01-e2e-cpu.json").write_text(
        '{"results": []}', encoding="utf-8"
    )
    markdown = regenerate_markdown(tmp_path)
    assert markdown.exists()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_added_peak_ignores_what_peaked_before() -> None:
    import numpy as np

    from segresmamba.bench.measure import added_peak_rss_gb

    big = np.ones(400 * 2**20 // 8)  # a 400 MiB peak before the step
    del big
    added = added_peak_rss_gb(lambda: np.ones(100 * 2**20 // 8).sum())
    assert 0.08 < added < 0.2  # the step's own 100 MiB (0.098 GB), not the earlier 400


def test_fused_scan_measurement_reports_time_and_memory() -> None:
    import torch

    from segresmamba.bench.scan_bench import (
        make_scan_inputs,
        run_numba_scan,
        scan_entry,
        to_entry_layout,
    )

    _, token_major = scan_entry()
    inputs = to_entry_layout(make_scan_inputs(50_000, 96, 16, 1, 0), token_major)
    grad_out = torch.ones(tuple(inputs["u"].shape))
    result = run_numba_scan(inputs, token_major, grad_out, repeats=1)
    assert result["numba_vs_torch_max_abs_diff"] < 1e-4
    # forward: at least its output (50,000 x 96 float32 = 0.019 GB); the backward also
    # returns a gradient per input, so it adds more.
    assert 0.015 < result["numba_forward_added_rss_gb"] < 0.2
    assert result["numba_forward_backward_added_rss_gb"] > result["numba_forward_added_rss_gb"]


def test_tom_macs_count_every_projection_the_scan_applies() -> None:
    """The MAC count of one ToM: in_proj, then per direction x_proj and dt_proj (dt_proj runs
    inside the numba scan on CPUs, and must still be counted), out_proj, plus the scan's own."""
    import torch

    from segresmamba.bench.measure import count_macs
    from segresmamba.network import TriOrientedMamba

    d_model, side = 48, 8
    layer = TriOrientedMamba(d_model)
    tokens, d, r, n = side**3, layer.d_inner, layer.dt_rank, layer.d_state
    result = count_macs(layer, torch.randn(1, d_model, side, side, side))
    projections = tokens * (d_model * 2 * d + 3 * d * (r + 2 * n) + 3 * r * d + d * d_model)
    assert result["counted_macs"] == projections
    assert result["scan_macs"] == 3 * (3 * tokens * d * n)


def test_rounds_alternate_models_in_fresh_processes(tmp_path: Path) -> None:
    """--rounds 2: each model measured once per round, the order rotating, the figures the
    median over rounds with every round kept."""
    out = tmp_path / "rounds.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "segresmamba.bench", "--quick", "--models", "unet,segresnet",
         "--rounds", "2", "--no-write", "--out-json", str(out)],
        capture_output=True, encoding="utf-8", env=env, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(out.read_text(encoding="utf-8"))
    assert run["settings"]["rounds"] == 2
    started = [line.split("] ", 1)[1].split(" ")[0] for line in done.stderr.splitlines()
               if "bench: round " in line]  # fmt: skip
    assert started == ["unet", "segresnet", "segresnet", "unet"]
    for result in run["results"]:
        rounds = result["forward_s_rounds"]
        assert len(rounds) == 2 and result["forward_s_median"] == pytest.approx(sum(rounds) / 2)
    assert "then the median over 2 rounds in which the models alternated" in done.stdout


def test_combine_rounds_takes_median_times_and_largest_peak() -> None:
    from segresmamba.bench.runner import combine_rounds

    rounds = [
        {"model": "m", "params": 5, "forward_s_median": t, "peak_rss_gb": r, "quick": True}
        for t, r in ((3.0, 1.0), (1.0, 2.0), (2.0, 1.5))
    ]
    combined = combine_rounds(rounds)
    assert combined["forward_s_median"] == 2.0 and combined["forward_s_rounds"] == [3.0, 1.0, 2.0]
    assert combined["peak_rss_gb"] == 2.0 and combined["params"] == 5 and combined["quick"] is True
