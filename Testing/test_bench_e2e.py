"""The end-to-end benchmark runs the real command on a real CT and records what it claims."""

from __future__ import annotations

import json
import subprocess
import sys


def test_e2e_benchmark_times_the_real_command(shared_data, tmp_path):
    out_json = tmp_path / "e2e.json"
    image = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    command = [sys.executable, "-m", "segresmamba.bench.e2e", "--image", str(image),
               "--tasks", "phantom", "--modes", "fast", "--repeats", "1", "--no-write",
               "--out-json", str(out_json)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run = json.loads(out_json.read_text())
    (result,) = run["results"]
    assert result["task"] == "phantom" and result["mode"] == "fast"
    assert result["wall_s_median"] > 0 and len(result["wall_s_all"]) == 1
    assert 0.1 < result["peak_rss_gb"] < 8
    assert "segresmamba segment -t phantom" in result["command"] and "--fast" in result["command"]
    assert "| phantom | fast |" in done.stdout
