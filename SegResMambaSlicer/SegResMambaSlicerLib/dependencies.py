"""Which Python packages the engine needs in Slicer's Python, what is missing, how to install it.

PyTorch installation is the peers' top complaint: a CUDA build that does not fit the driver, or
a CPU build replacing a working CUDA one. So PyTorch goes through the PyTorch Utils extension
(which picks the build for the GPU and driver) and everything else through pip, after the user
has seen the list and agreed. mamba-ssm is optional: the engine's portable scan runs without it,
so it is reported, never required. Nothing already installed in Slicer's Python is replaced:
every installed distribution, read at run time, is pinned at its present version in pip's
constraints file (Slicer's SimpleITK has its own IO classes and its numpy is what Slicer was
built against; other extensions' packages are theirs). The DICOM SEG writer's packages are the
command line's business and are never installed here (see ``DICOM_SEG_REQUIREMENTS``). Only the
standard library is used here, because this runs exactly when the packages may be absent.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "DICOM_SEG_REQUIREMENTS",
    "OPTIONAL",
    "REQUIREMENTS",
    "SLICER_BUNDLED",
    "InstallPlan",
    "Missing",
    "Requirement",
    "constraints_for",
    "describe_devices",
    "device_text",
    "distribution_key",
    "engine_device",
    "find_missing",
    "install_plan",
    "installed_distributions",
    "pytorch_utils_available",
    "scan_backend_text",
    "version_tuple",
]


@dataclass(frozen=True)
class Requirement:
    """A package the engine imports: distribution name (pip), import name, minimum version, and
    the first version known to break it (``below``), if any."""

    distribution: str
    module: str
    minimum: str
    purpose: str
    below: str = ""

    @property
    def spec(self) -> str:
        """The pip requirement, e.g. ``monai>=1.4`` or ``pydicom>=3.0,<4``."""
        upper = f",<{self.below}" if self.below else ""
        return f"{self.distribution}>={self.minimum}{upper}"


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", "torch", "2.1", "runs the network"),
    Requirement("monai", "monai", "1.4", "resampling and the sliding window"),
    Requirement("numpy", "numpy", "1.24", "arrays"),
    Requirement("einops", "einops", "0.7", "tensor reshaping in the network"),
    Requirement("safetensors", "safetensors", "0.4", "reads model weights safely"),
    Requirement("SimpleITK", "SimpleITK", "2.3", "image geometry"),
    Requirement("nibabel", "nibabel", "5.0", "NIfTI files"),
    Requirement("pynrrd", "nrrd", "1.0", "NRRD and .seg.nrrd files"),
    Requirement("tqdm", "tqdm", "4.60", "progress reports"),
    Requirement("jsonschema", "jsonschema", "4.0", "checks the task and model registries"),
    Requirement("numba", "numba", "0.59", "compiles the selective scan's loop for CPUs"),
)
"""What the module checks and installs. With ``DICOM_SEG_REQUIREMENTS`` it is ``pyproject.toml``'s
dependencies (a test checks it)."""

DICOM_SEG_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("pydicom", "pydicom", "3.0", "reads the source series of a DICOM SEG", below="4"),
    Requirement("highdicom", "highdicom", "0.25", "writes DICOM SEG results", below="0.29"),
)
"""Only the command line's DICOM SEG output (``-o result.dcm``) uses these, so the module never
checks or installs them: Slicer 5.10 ships pydicom 2.4.4, which highdicom 0.25+ cannot use, and
replacing Slicer's pydicom is not ours to do. Slicer 5.12 ships both (pydicom 3.0.2, highdicom
0.27.0). Elsewhere the engine says what is missing when DICOM SEG output is asked for."""

SLICER_BUNDLED: frozenset[str] = frozenset({"numpy", "simpleitk"})
"""Those of our requirements that Slicer ships itself (checked against the requirement files of
Slicer 5.10.0 and 5.12.3 by the tests): only their presence is checked, never their version, and
they are never installed. What pip may not replace is not this list but everything installed,
read at run time (:func:`installed_distributions`)."""


def bundled_with_slicer(requirement: Requirement) -> bool:
    """Whether Slicer ships this package itself (then only its presence is checked)."""
    return requirement.distribution.lower() in SLICER_BUNDLED


OPTIONAL: tuple[Requirement, ...] = (
    Requirement("mamba-ssm", "mamba_ssm", "2.2", "faster selective scan on NVIDIA GPUs (Linux)"),
)


def version_tuple(version: str) -> tuple[int, ...]:
    """``2.13.0+cpu`` -> (2, 13, 0): the leading numeric release, enough for minimums."""
    numbers = []
    for part in version.split("+")[0].split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def distribution_key(name: str) -> str:
    """The name pip compares (PEP 503): ``typing_extensions`` and ``Typing-Extensions`` match."""
    return re.sub(r"[-_.]+", "-", name).lower()


# A public PEP 440 version with an optional local part: what a constraints file can pin. Anything
# else (a legacy or broken version string) would make pip refuse the whole constraints file.
_PINNABLE = re.compile(
    r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$", re.I
)


def installed_distributions() -> dict[str, str]:
    """``{name: version}`` of every distribution installed in this Python, read now; where a
    name is installed twice, the copy Python imports (first on ``sys.path``) counts."""
    found: dict[str, tuple[str, str]] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        if name and dist.version and distribution_key(name) not in found:
            found[distribution_key(name)] = (name, dist.version)
    return dict(sorted(found.values(), key=lambda item: item[0].lower()))


def constraints_for(packages: Iterable[str], installed: dict[str, str] | None = None) -> list[str]:
    """``name==version`` for every installed distribution that ``packages`` (pip requirement
    strings) do not name: pip may add new packages but not replace or remove anything present."""
    installed = installed_distributions() if installed is None else installed
    asked = {distribution_key(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in packages}
    return [
        f"{name}=={version}"
        for name, version in installed.items()
        if distribution_key(name) not in asked and _PINNABLE.match(version)
    ]


@dataclass(frozen=True)
class Missing:
    """A requirement that is absent (``found`` None) or too old (``found`` = its version)."""

    requirement: Requirement
    found: str | None = None

    def describe(self) -> str:
        r = self.requirement
        if bundled_with_slicer(r):
            return f"{r.distribution} (ships with Slicer but cannot be imported; reinstall Slicer)"
        if self.found is None:
            return f"{r.distribution} (not installed; {r.purpose})"
        return f"{r.distribution} {self.found} is too old (need {r.minimum} or newer)"


def _installed_version(requirement: Requirement) -> str | None:
    if importlib.util.find_spec(requirement.module) is None:
        return None
    try:
        return importlib.metadata.version(requirement.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "0"  # importable without metadata (e.g. a source checkout): cannot judge, accept


def find_missing(requirements: Iterable[Requirement] = REQUIREMENTS) -> list[Missing]:
    """The requirements that are not importable, or older than their minimum. Packages Slicer
    ships are only checked for presence: their version is Slicer's choice, not ours."""
    missing = []
    for requirement in requirements:
        found = _installed_version(requirement)
        if found is None:
            missing.append(Missing(requirement))
        elif bundled_with_slicer(requirement):
            continue
        elif found != "0" and version_tuple(found) < version_tuple(requirement.minimum):
            missing.append(Missing(requirement, found))
    return missing


@dataclass
class InstallPlan:
    """What to install: PyTorch through PyTorch Utils (``torch`` is its version requirement,
    None when PyTorch is fine) and the rest with pip, in one call so pip resolves them together."""

    torch: str | None = None
    pip: list[str] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)  # "numpy==2.2.1": what is installed, as is
    not_installable: list[Missing] = field(default_factory=list)  # bundled with Slicer, absent

    @property
    def empty(self) -> bool:
        return self.torch is None and not self.pip

    def summary(self, pytorch_utils: bool = True) -> str:
        """The confirmation text shown before anything is installed."""
        if self.empty:
            if self.not_installable:
                names = ", ".join(m.requirement.distribution for m in self.not_installable)
                return (
                    f"{names}: part of Slicer but missing; SegResMamba will not replace it. "
                    "Reinstall Slicer."
                )
            return "All Python packages SegResMamba needs are installed."
        lines = ["SegResMamba needs these Python packages in Slicer's Python:"]
        lines += [f"  - {m.describe()}" for m in self.missing]
        lines.append("")
        if self.torch:
            lines.append(_torch_route(self.torch, pytorch_utils))
        if self.pip:
            lines.append(f"pip will install: {' '.join(self.pip)}")
        if self.pinned:
            lines.append(
                f"The {len(self.pinned)} packages already installed (Slicer's own, such as "
                "numpy, SimpleITK and pip, and those of other extensions) stay as they are."
            )
        lines += ["", "This downloads several hundred MB and may take minutes. Install now?"]
        return "\n".join(lines)


def _torch_route(requirement: str, pytorch_utils: bool) -> str:
    if not pytorch_utils:
        return (
            f"PyTorch {requirement} will be installed by pip (install the PyTorch extension to get "
            "a build chosen for your GPU)."
        )
    if importlib.util.find_spec("light_the_torch") is not None:
        return (
            f"PyTorch {requirement} will be installed by the PyTorch Utils extension (it picks "
            "the build that fits your GPU)."
        )
    return (
        f"PyTorch {requirement} will be installed by the PyTorch Utils extension (it picks the "
        "build that fits your GPU), which needs light-the-torch: that is installed first, without "
        "changing Slicer's packages. Where no light-the-torch release accepts Slicer's pip (Slicer "
        "5.12 ships pip 26.1), PyTorch is installed by pip instead: PyPI's default build."
    )


def install_plan(
    missing: Iterable[Missing], installed: dict[str, str] | None = None
) -> InstallPlan:
    """Split the missing packages between PyTorch Utils (torch) and pip (the rest). Packages
    Slicer ships are never installed, and everything ``installed`` (default: read now) that the
    plan does not install is pinned at its present version."""
    plan = InstallPlan(missing=list(missing))
    for item in plan.missing:
        if bundled_with_slicer(item.requirement):
            plan.not_installable.append(item)
        elif item.requirement.distribution == "torch":
            plan.torch = f">={item.requirement.minimum}"
        else:
            plan.pip.append(item.requirement.spec)
    planned = [*plan.pip, *(["torch"] if plan.torch else [])]
    plan.pinned = constraints_for(planned, installed)
    return plan


def pytorch_utils_available() -> bool:
    """Whether Slicer's PyTorch Utils module (PyTorch extension) can be imported."""
    return importlib.util.find_spec("PyTorchUtils") is not None


def describe_devices() -> dict[str, str | None]:
    """What PyTorch sees, for the device line: ``{"cuda": GPU name or None, "mps": "Apple GPU"
    or None, "torch": version}``. Imports torch, so call it once the requirements are met."""
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    backend = getattr(torch.backends, "mps", None)
    mps = "Apple GPU (MPS)" if backend is not None and backend.is_available() else None
    return {"cuda": cuda, "mps": mps, "torch": torch.__version__}


def engine_device(choice: str, devices: dict[str, str | None]) -> str:
    """The engine's ``--device`` for the UI choice "auto", "cpu" or "gpu"."""
    if choice == "gpu":
        if devices.get("cuda"):
            return "cuda"
        if devices.get("mps"):
            return "mps"
        raise RuntimeError("no GPU detected by PyTorch; choose CPU or auto")
    return "cpu" if choice == "cpu" else "auto"


def device_text(choice: str, devices: dict[str, str | None]) -> str:
    """One line saying what will run: ``GPU: NVIDIA H100`` or ``CPU (no GPU detected ...)``."""
    gpu = devices.get("cuda") or devices.get("mps")
    if choice == "cpu" or not gpu:
        note = "" if gpu else " - no GPU detected; fast mode is several times quicker"
        return f"CPU{note}"
    return f"GPU: {gpu}"


def scan_backend_text(device: str) -> str:
    """Which selective scan runs on ``device`` ("cuda", "cpu", ...): the engine's own choice
    (``resolve_backend``) in the engine's own words (``describe_backend``), so they cannot drift."""
    from segresmamba.scan import describe_backend, resolve_backend

    try:
        backend = resolve_backend(device="cuda" if device == "cuda" else "cpu")
    except (RuntimeError, ValueError) as error:
        return f"selective scan: unavailable ({error})"
    text = f"selective scan: {describe_backend(backend)}"
    if device == "cuda" and backend != "cuda" and importlib.util.find_spec("mamba_ssm") is None:
        text += " (mamba-ssm not installed; optional)"
    return text
