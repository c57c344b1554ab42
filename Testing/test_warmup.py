"""``segresmamba warmup`` (issue 22, point 2, startup): the numba kernels are compiled into a
real, fresh numba cache ahead of use, and a later ``segment`` process compiles nothing.

The signal that nothing compiles is numba's own: a compile writes the kernel's index (``.nbi``)
and code (``.nbc``) files into the cache; loading from the cache writes nothing. The warm-up
compiles once for the module (about a minute on two busy cores: that is the cost it moves out
of the first segmentation); every other test here reuses that cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_segment import tiny_checkpoint

from SegResMambaSlicerLib.process import engine_environment
from SegResMambaSlicerLib.warmup import start_warmup

REPO = Path(__file__).resolve().parents[1]
KERNELS = ("conv_silu_forward_groups", "conv_silu_backward", "scan_forward_groups", "scan_backward")
"""The kernels inference (forward) and training (backward) run on float32 CPU data."""


def _env(cache: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), SEGRESMAMBA_HOME=str(home))
    path = [str(REPO / "SegResMambaSlicer"), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    return env


def _engine(arguments: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segresmamba", *arguments],
        env=env,
        capture_output=True,
        encoding="utf-8",
        timeout=timeout,
    )


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file of the cache with its modification time and size."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real warm-up into a fresh numba cache folder."""
    root = tmp_path_factory.mktemp("warmup")
    env = _env(root / "numba-cache", root / "home")
    first = _engine(["warmup"], env)
    return {"env": env, "cache": root / "numba-cache", "first": first, "root": root}


def test_warmup_compiles_every_kernel_into_a_fresh_cache(warm: dict) -> None:
    first = warm["first"]
    assert first.returncode == 0, first.stderr
    assert "compiled 4 kernel version(s)" in first.stdout, first.stdout
    assert "warm-up done in" in first.stdout
    names = {Path(name).name for name in _files(warm["cache"])}
    for kernel in KERNELS:
        assert any(f".{kernel}-" in n and n.endswith(".nbi") for n in names), (kernel, names)
        assert any(f".{kernel}-" in n and n.endswith(".nbc") for n in names), (kernel, names)


def test_a_second_warmup_is_fast_and_changes_nothing(warm: dict) -> None:
    before = _files(warm["cache"])
    again = _engine(["warmup"], warm["env"], timeout=60)
    assert again.returncode == 0, again.stderr
    assert "already compiled" in again.stdout and "compiled 4" not in again.stdout, again.stdout
    assert _files(warm["cache"]) == before
    forced = _engine(["warmup", "--force"], warm["env"])  # runs the kernels: loads, no compile
    assert forced.returncode == 0, forced.stderr
    assert "4 kernel version(s) were already in the cache" in forced.stdout, forced.stdout
    assert "compiled" not in forced.stdout.replace("already compiled", "")
    assert _files(warm["cache"]) == before


def test_segment_after_warmup_compiles_nothing(warm: dict, shared_data: Path) -> None:
    """The real btcv task's inference path (body crop, sliding window, fast mode) on a real CT,
    in a fresh process: numba's cache is only read."""
    before = _files(warm["cache"])
    model = tiny_checkpoint(warm["root"] / "btcv-tiny.safetensors", "btcv")
    out = warm["root"] / "labels.nii.gz"
    scan = shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"
    arguments = ["segment", "-t", "btcv", "-i", str(scan), "-o", str(out), "--model", str(model)]
    done = _engine([*arguments, "--device", "cpu", "--fast", "--overwrite"], warm["env"])
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert _files(warm["cache"]) == before, "segment compiled a kernel the warm-up did not"


def test_without_the_training_code_only_the_inference_kernels_run(
    warm: dict, tmp_path: Path
) -> None:
    """The wheel ships no ``training/``: its warm-up runs the inference kernels only (here
    loaded from the warm cache) and says the training ones were left out."""
    env = dict(warm["env"], PYTHONPATH=str(REPO / "SegResMambaSlicer"))
    done = subprocess.run(
        [sys.executable, "-m", "segresmamba", "warmup", "--force"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "2 kernel version(s) were already in the cache" in done.stdout, done.stdout
    assert "training kernels: not compiled" in done.stdout


def test_slicer_starts_the_warmup_as_a_background_job(warm: dict) -> None:
    """The module's hook: ``PythonSlicer -m segresmamba warmup`` in its own process group with
    the module's engine environment (here this interpreter stands in for PythonSlicer)."""
    env = engine_environment(warm["env"], module_dir=REPO / "SegResMambaSlicer")
    process = start_warmup(sys.executable, env)
    assert process is not None
    events = process.wait(timeout=120)
    assert process.returncode == 0, process.log
    assert any("already compiled" in line for line in process.log), process.log
    assert events[-1].kind == "finished"


def test_an_unwritable_cache_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    done = _engine(["warmup"], _env(blocker / "cache", tmp_path / "home"), timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the numba cache folder"), lines
    assert "NUMBA_CACHE_DIR" in lines[0]


def test_the_first_run_check_is_light() -> None:
    """Every run of an installed CLI asks whether a first-run warm-up is due: that must not
    load PyTorch, numba or MONAI."""
    code = (
        "import sys; from segresmamba import cli, warmup; warmup.needs_first_run_warmup(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numba', 'monai'}))"
    )
    env = _env(Path("unused"), Path("unused-home"))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, encoding="utf-8", timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_first_run_warmup_is_due_only_for_an_installed_wheel(tmp_path: Path) -> None:
    """A wheel (its .dist-info beside the package) warms up on its first segment or demo; a
    checkout (make install does it) and the Slicer module's layout (its background job does)
    never do; nor does a wheel once a warm-up of its kernels is recorded."""
    code = "from segresmamba.warmup import needs_first_run_warmup as n; print(n())"
    source = REPO / "SegResMambaSlicer" / "segresmamba"
    layouts = {"wheel": tmp_path / "site-packages", "slicer": tmp_path / "qt-scripted-modules"}
    for folder in layouts.values():
        shutil.copytree(
            source, folder / "segresmamba", ignore=shutil.ignore_patterns("__pycache__")
        )
    (layouts["wheel"] / "segresmamba-0.1.0.dist-info").mkdir()
    layouts["checkout"] = REPO / "SegResMambaSlicer"
    due = {}
    for name, folder in layouts.items():
        env = dict(os.environ, PYTHONPATH=str(folder), SEGRESMAMBA_HOME=str(tmp_path / "home"))
        env.pop("SEGRESMAMBA_NO_WARMUP", None)
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, encoding="utf-8", timeout=60
        )
        assert done.returncode == 0, done.stderr
        due[name] = done.stdout.strip()
    assert due == {"wheel": "True", "slicer": "False", "checkout": "False"}


def test_a_first_run_warmup_that_cannot_run_only_warns(tmp_path: Path) -> None:
    """The wheel's first segment with an unwritable NUMBA_CACHE_DIR: one warning, and the
    command goes on (here to its own one-line error about the missing input)."""
    site = tmp_path / "site-packages"
    source = REPO / "SegResMambaSlicer" / "segresmamba"
    shutil.copytree(source, site / "segresmamba", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "segresmamba-0.1.0.dist-info").mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(site), SEGRESMAMBA_HOME=str(tmp_path / "home"))
    env["NUMBA_CACHE_DIR"] = str(blocker / "cache")
    env.pop("SEGRESMAMBA_NO_WARMUP", None)
    missing = tmp_path / "missing.nii.gz"
    done = subprocess.run(
        [sys.executable, "-m", "segresmamba", "segment", "-t", "phantom", "-i", str(missing)]
        + ["-o", str(tmp_path / "out.nii.gz")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        encoding="utf-8",
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert any(
        line.startswith("warning: kernel warm-up skipped: the numba cache") for line in lines
    )
    assert lines[-1].startswith("error: ") and "missing.nii.gz" in lines[-1], lines
