"""The end-to-end benchmark runs the real command on a real CT and records what it claims."""

from __future__ import annotations

import json
import subprocess
import sys


def test_e2e_benchmark_times_the_real_command(shared_data, tmp_path):
    out_json = tmp_path / "e2e.json"
    image = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    command = [sys.executable, "-m", "segresmamba.bench.e2e", "--image", str(image),
               "--tasks", "phantom", "--modes", "fast", "--rounds", "2", "--warmup", "0",
               "--no-write", "--body-crop", "on,off",
               "--out-json", str(out_json)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=600)
    assert done.returncode == 0, done.stderr
    run = json.loads(out_json.read_text(encoding="utf-8"))
    on, off = run["results"]
    assert (on["body_crop"], off["body_crop"]) == ("on", "off")
    for result in (on, off):
        assert result["task"] == "phantom" and result["mode"] == "fast"
        assert result["code"] == "this"
        assert result["wall_s_median"] > 0 and len(result["wall_s_all"]) == 2
        # The first progress event comes after start-up and before the process ends.
        assert len(result["first_progress_s_all"]) == 2
        assert 0 < result["first_progress_s_median"] < result["wall_s_median"]
        assert 0.1 < result["peak_rss_gb"] < 8
        assert "segresmamba segment -t phantom" in result["command"]
        assert "--fast" in result["command"]
        assert result["windows"] == 6  # 122x101x30 at 3 mm, 64-voxel patches: 3x2x1
    assert "--no-body-crop" in off["command"] and "--no-body-crop" not in on["command"]
    assert "| phantom | fast | on | this | 6 |" in done.stdout
    assert "| phantom | fast | off | this | 6 |" in done.stdout
    assert "122×101×30 voxels at 3×3×3 mm" in done.stdout
    # Rounds alternate: round 1 runs on then off, round 2 off then on.
    order = [line.split(": ", 2)[2] for line in done.stderr.splitlines() if ": round " in line]
    assert order == [f"task phantom mode fast body crop {c} code this" for c in
                     ("on", "off", "off", "on")]  # fmt: skip


def test_e2e_benchmark_alternates_with_a_baseline_commit(shared_data, tmp_path):
    """--baseline REF runs the engine of another commit, unpacked from git, in the same rounds."""
    out_json = tmp_path / "e2e.json"
    image = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    command = [sys.executable, "-m", "segresmamba.bench.e2e", "--image", str(image),
               "--tasks", "phantom", "--modes", "fast", "--rounds", "1", "--warmup", "0",
               "--no-write", "--baseline", "HEAD", "--out-json", str(out_json)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=600)
    assert done.returncode == 0, done.stderr
    baseline, this = json.loads(out_json.read_text(encoding="utf-8"))["results"]
    assert (baseline["code"], this["code"]) == ("HEAD", "this")
    assert baseline["wall_s_median"] > 0 and this["wall_s_median"] > 0
    refused = subprocess.run(
        command[:-4] + ["--baseline", "no-such-ref", "--out-json", str(out_json)],
        capture_output=True, encoding="utf-8", timeout=600,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--baseline no-such-ref: not a commit of" in refused.stderr.strip().splitlines()[-1]


def test_full_size_ct_keeps_the_extent_on_the_finer_grid(shared_data, tmp_path):
    import SimpleITK as sitk

    from segresmamba.bench.full_size import full_size_ct

    source = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    made = full_size_ct(source, (2.0, 2.5, 6.0), folder=tmp_path)
    assert full_size_ct(source, (2.0, 2.5, 6.0), folder=tmp_path) == made  # made once
    before, after = sitk.ReadImage(str(source)), sitk.ReadImage(str(made))
    assert after.GetPixelID() == sitk.sitkInt16 and after.GetSpacing() == (2.0, 2.5, 6.0)
    for image in (before, after):
        assert image.GetDirection() == before.GetDirection()
    extent = [n * s for n, s in zip(before.GetSize(), before.GetSpacing())]
    assert after.GetSize() == tuple(round(e / s) for e, s in zip(extent, (2.0, 2.5, 6.0)))

    def corner(image):  # the outer face of the first voxel, in physical space
        return image.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5])

    assert max(abs(a - b) for a, b in zip(corner(before), corner(after))) < 1e-3
