"""Compile the CPU kernels ahead of use, so that the first segmentation does not wait for them.

numba compiles the scan and conv kernels (:mod:`segresmamba.scan`) the first time they run, for
the argument types they get, and keeps the machine code in its cache: ``NUMBA_CACHE_DIR`` when
set, else ``__pycache__`` beside the kernels, else the user's cache folder. On two busy cores
that first compile takes about 10 s for the inference kernels and over a minute for the training
ones (the scan's backward); later processes load the code from the cache. :func:`warm_up` runs a small network once the way inference runs it (eval, inference
mode) and, where the training code is installed, once the way training runs it (forward and
backward), so every kernel is compiled for the very types it will see. ``segresmamba warmup``
calls it; ``make install``, the wheel's first ``segment`` or ``demo`` and the Slicer module
(after installing its packages) run it.

Standard library only at import time: the CLI checks :func:`needs_first_run_warmup` on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SegResMambaError

__all__ = ["WarmupReport", "cache_key", "needs_first_run_warmup", "training_installed", "warm_up"]

SCAN_DIR = Path(__file__).resolve().parent / "scan"
MARKER = "warmup.json"
"""In the per-user folder: the complete warm-ups, by :func:`cache_key`."""

KERNELS = {
    "numba_conv": ("conv_silu_forward", "conv_silu_forward_groups", "conv_silu_backward"),
    "numba_kernels": ("scan_forward",),
    "numba_simd": ("scan_forward_groups",),
    "numba_backward": ("scan_backward",),
}
"""Every numba kernel of the engine, by module of :mod:`segresmamba.scan`."""


@dataclass
class WarmupReport:
    """What a warm-up did: the cache folder, the kernels compiled now and those loaded from the
    cache (as ``name(types)``), and the seconds the whole warm-up took."""

    cache_folder: str
    compiled: list[str] = field(default_factory=list)
    from_cache: list[str] = field(default_factory=list)
    seconds: float = 0.0
    recorded: bool = False  # True: found warm by its record, nothing run
    training: bool = True  # False: the inference kernels only (no training code installed)

    def lines(self) -> list[str]:
        """What ``segresmamba warmup`` prints."""
        names = sorted({entry.split("(", 1)[0] for entry in self.compiled})
        lines = [f"numba cache: {self.cache_folder}"]
        if self.recorded:
            lines.append("the kernels of this engine are already compiled there")
        if self.compiled:
            lines.append(
                f"compiled {len(self.compiled)} kernel version(s) in {self.seconds:.1f} s: "
                + ", ".join(names)
            )
        if self.from_cache:
            lines.append(f"{len(self.from_cache)} kernel version(s) were already in the cache")
        if not self.training and not self.recorded:
            lines.append("training kernels: not compiled (the training code is not installed)")
        lines.append(f"warm-up done in {self.seconds:.1f} s")
        return lines


def cache_key() -> str:
    """What a warm cache depends on: this engine's kernels (their source, which numba's cache is
    keyed on, and their folder, which picks the cache folder when ``NUMBA_CACHE_DIR`` is not
    set), numba's version and the cache folder asked for. Cheap: no numba import."""
    from importlib import metadata

    from . import __version__

    digest = hashlib.sha256(str(SCAN_DIR).encode("utf-8"))
    for path in sorted(SCAN_DIR.glob("numba_*.py")):
        digest.update(path.name.encode("utf-8") + path.read_bytes())
    try:
        numba_version = metadata.version("numba")
    except metadata.PackageNotFoundError:
        numba_version = "none"
    cache_dir = os.environ.get("NUMBA_CACHE_DIR", "")
    return f"{__version__}|{numba_version}|{cache_dir}|{digest.hexdigest()[:16]}"


def _marker_path() -> Path:
    from .home import home_dir

    return home_dir() / MARKER


def _records() -> dict:
    """Complete warm-ups by :func:`cache_key` (one per install and cache folder)."""
    try:
        records = json.loads(_marker_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _recorded_folder(training: bool) -> str | None:
    """The cache folder of the last complete warm-up of these kernels (with the training ones
    when ``training``; a warm-up with them also covers inference), when its index files are
    all still there; None otherwise (never recorded, other kernels or numba, removed)."""
    records = _records()
    scopes = ("training",) if training else ("training", "inference")
    for scope in scopes:
        try:
            record = records[f"{cache_key()}|{scope}"]
            folder, kernels = Path(record["cache_folder"]), list(record["kernels"])
        except (TypeError, KeyError):
            continue
        if kernels and all(any(folder.glob(f"{kernel}-*.nbi")) for kernel in kernels):
            return str(folder)
    return None


def training_installed() -> bool:
    """Whether the training code (``training/``: a checkout, the Slicer module) is importable
    here; the wheel does not ship it, so its warm-up compiles the inference kernels only."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("training")
    except (ImportError, ValueError):
        return False
    places = list(spec.submodule_search_locations or []) if spec else []
    return any((Path(place) / "train.py").is_file() for place in places)


def needs_first_run_warmup() -> bool:
    """True where this engine runs from an installed wheel (its ``.dist-info`` beside the
    package; a checkout has ``make install`` and the Slicer module its own background warm-up)
    and no complete warm-up of these kernels is recorded."""
    if os.environ.get("SEGRESMAMBA_NO_WARMUP"):
        return False
    if not any(Path(__file__).resolve().parents[1].glob("segresmamba-*.dist-info")):
        return False
    return _recorded_folder(training=False) is None


def _record(report: WarmupReport) -> None:
    """Remember a complete warm-up, so the installed CLI's first-run check passes; a folder
    that cannot be written only means the check runs the warm-up again next time."""
    from .io.atomic import atomic_output

    modules = {name: module for module, names in KERNELS.items() for name in names}
    used = sorted({entry.split("(", 1)[0] for entry in report.compiled + report.from_cache})
    records = _records()
    records[f"{cache_key()}|{'training' if report.training else 'inference'}"] = {
        "cache_folder": report.cache_folder,
        "kernels": [f"{modules[name]}.{name}" for name in used],
        "seconds": round(report.seconds, 1),
    }
    try:
        _marker_path().parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(_marker_path(), overwrite=True) as partial:
            Path(partial).write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    except (OSError, SegResMambaError):
        pass


def _check_cache_folder(folder: str) -> None:
    """numba silently falls back to another folder when ``NUMBA_CACHE_DIR`` cannot be written;
    a warm-up into a folder the user did not ask for would not help, so refuse in one line."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise SegResMambaError(
            f"the numba cache folder {folder} (NUMBA_CACHE_DIR) cannot be written "
            f"({error.strerror or error}); set NUMBA_CACHE_DIR to a folder you can write"
        ) from None


def _dispatchers() -> dict:
    """The kernels' numba dispatchers by name (importing them defines them)."""
    import importlib

    found = {}
    for module, names in KERNELS.items():
        try:
            loaded = importlib.import_module(f".scan.{module}", __package__)
        except RuntimeError as error:  # numba: "cannot cache function ...: no locator available"
            raise SegResMambaError(
                "no writable folder for numba's kernel cache (neither beside the kernels nor in "
                "the user's cache folder); set NUMBA_CACHE_DIR to a folder you can write"
            ) from error
        found.update({name: getattr(loaded, name) for name in names})
    return found


def _run_network(training: bool) -> None:
    """A small SegResMamba (the phantom task's widths) on one 64^3 window: once as inference
    runs it, and with ``training`` once as training runs it (forward and backward). The kernels
    get the same argument types (dtypes, array layouts, flags) whatever the network's widths,
    so the cache serves every task."""
    import torch

    from .network import SegResMamba

    generator = torch.Generator().manual_seed(0)
    model = SegResMamba(in_channels=1, out_channels=2, widths=(8, 16, 32, 64))
    window = torch.randn((1, 1, 64, 64, 64), generator=generator)
    model.eval()
    with torch.inference_mode():
        model(window)
    if not training:
        return
    model.train()
    model(window).float().square().mean().backward()


def warm_up(force: bool = False, training: bool | None = None) -> WarmupReport:
    """Compile (or load from numba's cache) every kernel inference uses, and those training
    uses when ``training`` (None: where the training code is installed, :func:`training_installed`);
    returns what was compiled. A warm-up of these very kernels into a cache that still holds
    them is not repeated (``force``: run anyway). Raises SegResMambaError when the cache folder
    cannot be written."""
    started = time.perf_counter()
    training = training_installed() if training is None else training
    asked = os.environ.get("NUMBA_CACHE_DIR")
    if asked:
        _check_cache_folder(asked)
    folder = None if force else _recorded_folder(training)
    if folder is not None:
        return WarmupReport(
            folder, seconds=time.perf_counter() - started, recorded=True, training=training
        )
    try:
        import numba  # noqa: F401
    except ImportError:
        return WarmupReport("none: numba is not installed, the portable torch scan runs")
    from .scan import resolve_backend

    if resolve_backend() != "numba":
        return WarmupReport(f"none: the {resolve_backend()} scan runs (SEGRESMAMBA_SCAN)")
    from .threads import configure_threads

    configure_threads()  # as segment does: SEGRESMAMBA_THREADS / _RESERVE_CORES (Slicer) hold
    kernels = _dispatchers()
    _run_network(training)
    report = WarmupReport(str(next(iter(kernels.values())).stats.cache_path), training=training)
    for name, kernel in kernels.items():
        stats = kernel.stats
        report.compiled += [f"{name}{tuple(s)}" for s in stats.cache_misses]
        report.from_cache += [f"{name}{tuple(s)}" for s in stats.cache_hits]
    report.seconds = time.perf_counter() - started
    _record(report)
    return report
