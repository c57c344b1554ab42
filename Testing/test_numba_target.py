"""numba_target: on AVX-512 CPUs the kernels are compiled without LLVM's 256-bit preference,
unless the user chose numba's CPU features; each case in a fresh interpreter, since numba fixes
its features once per process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

_PROBE = """
import llvmlite.binding as llvm
import numba
import segresmamba.scan.numba_kernels  # defines the kernels: the features are fixed from here
from numba.core import registry

host_has_avx512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
chosen = numba.config.CPU_FEATURES or ""
codegen = registry.cpu_target.target_context.codegen()
print(host_has_avx512, chosen.endswith(",-prefer-256-bit"), codegen._tm_features == chosen)
"""


def _probe(**env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**environment, **env},
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_full_width_on_avx512_and_only_there():
    host_has_avx512, dropped, in_codegen = _probe()
    assert dropped == host_has_avx512  # the preference goes exactly where AVX-512 is
    if dropped == "True":
        assert in_codegen == "True"  # and the code generator really uses it


def test_the_users_own_numba_cpu_choice_is_kept():
    _, dropped, _ = _probe(NUMBA_CPU_NAME="generic")
    assert dropped == "False"
