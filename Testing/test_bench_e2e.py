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
               "--body-crop", "on,off",
               "--out-json", str(out_json)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=600)
    assert done.returncode == 0, done.stderr
    run = json.loads(out_json.read_text(encoding="utf-8"))
    on, off = run["results"]
    assert (on["body_crop"], off["body_crop"]) == ("on", "off")
    for result in (on, off):
        assert result["task"] == "phantom" and result["mode"] == "fast"
        assert result["wall_s_median"] > 0 and len(result["wall_s_all"]) == 1
        assert 0.1 < result["peak_rss_gb"] < 8
        assert "segresmamba segment -t phantom" in result["command"]
        assert "--fast" in result["command"]
        assert result["windows"] == 6  # 122x101x30 at 3 mm, 64-voxel patches: 3x2x1
    assert "--no-body-crop" in off["command"] and "--no-body-crop" not in on["command"]
    assert "| phantom | fast | on | 6 |" in done.stdout
    assert "| phantom | fast | off | 6 |" in done.stdout
    assert "122×101×30 voxels at 3×3×3 mm" in done.stdout
