"""Thread counts follow the CPU affinity of the process, in real subprocesses started under a
real affinity, through the command line and through the Slicer module's engine process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from segresmamba.demo import demo_checkpoint
from SegResMambaSlicerLib import process

LINE = re.compile(
    r"debug: threads: torch (\d+), numba (\d+) \((\d+) cores available to this process, "
    r"(\d+) reserved\)"
)


def cpus(count: int) -> set[int]:
    """The first ``count`` CPUs this test process may use."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("this OS has no CPU affinity (os.sched_setaffinity)")
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < count:
        pytest.skip(f"needs {count} CPUs available to the test, has {len(mine)}")
    return set(mine[:count])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGRESMAMBA_")}
    env.update(extra)
    return env


def threads_line(text: str) -> tuple[int, int, int, int]:
    found = LINE.search(text)
    assert found, text
    return tuple(int(v) for v in found.groups())  # type: ignore[return-value]


def cli_under(cores: set[int], tmp_path, **env: str) -> subprocess.CompletedProcess:
    """``segresmamba --debug segment`` on a missing file: it sets its threads, says so, and
    stops with the usual one-line error before any heavy work."""
    command = [sys.executable, "-m", "segresmamba", "--debug", "segment", "-t", "phantom",
               "-i", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "out.nii.gz")]  # fmt: skip
    return subprocess.run(
        command,
        capture_output=True,
        encoding="utf-8",
        timeout=300,
        env=clean_env(**env),
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )


def test_the_command_line_uses_the_cores_of_its_affinity_not_the_machine(tmp_path):
    done = cli_under(cpus(1), tmp_path)
    assert done.returncode == 2 and "missing.nii.gz" in done.stderr
    assert threads_line(done.stderr) == (1, 1, 1, 0)
    done = cli_under(cpus(2), tmp_path)
    assert threads_line(done.stderr) == (2, 2, 2, 0)


def test_environment_overrides_and_bad_values(tmp_path):
    assert threads_line(cli_under(cpus(2), tmp_path, SEGRESMAMBA_THREADS="1").stderr)[:2] == (1, 1)
    assert threads_line(cli_under(cpus(2), tmp_path, SEGRESMAMBA_RESERVE_CORES="5").stderr) == (
        1, 1, 2, 5,
    )  # fmt: skip
    bad = cli_under(cpus(1), tmp_path, SEGRESMAMBA_THREADS="many")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "error: SEGRESMAMBA_THREADS='many': expected a whole number" in bad.stderr


def test_the_slicer_engine_process_leaves_one_core_to_the_interface(shared_data, tmp_path):
    """The module's own command and environment, a real segmentation, under 2 cores: 1 thread."""
    two = cpus(2)
    output = tmp_path / "seg.nii.gz"
    command = process.segment_command(
        sys.executable,
        "phantom",
        [shared_data / "ct-abdomen" / "example_ct_sm.nii.gz"],
        output,
        model=str(demo_checkpoint()),
        device="cpu",
        fast=True,
    )
    command = ["taskset", "-c", ",".join(str(c) for c in sorted(two)), *command, "--debug"]
    env = process.engine_environment(clean_env())
    assert env["SEGRESMAMBA_RESERVE_CORES"] == "1"
    engine = process.EngineProcess(command, env=env)
    engine.start()
    engine.wait(timeout=300)
    log = "\n".join(engine.log)
    assert engine.returncode == 0, log
    assert output.is_file()
    assert threads_line(log) == (1, 1, 2, 1)
