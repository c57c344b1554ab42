"""Carrying out an install plan inside Slicer: PyTorch first, then the rest with pip, each pip
call under constraints that pin everything installed at that moment.

Kept apart from ``dependencies`` (which decides *what*) because this part talks to Slicer:
``slicer.util.pip_install`` and the PyTorch Utils module. Two facts of Slicer's own code shape it:

- From Slicer 5.11 on (``slicer.packaging``), ``pip_install`` in the application shows its own
  "Package installation failed" dialog with pip's log before raising ``CalledProcessError``;
  Slicer 5.10's raises without a dialog. The user must see exactly one error dialog.
- PyTorch Utils installs ``light-the-torch`` with a plain ``pip_install("light-the-torch>=0.5")``.
  light-the-torch 0.8.1 needs ``pip<26.1`` and Slicer 5.12 ships pip 26.1.1, so that call would
  downgrade Slicer's pip. We install light-the-torch first, under the same pins; where pip cannot
  keep them, PyTorch comes from pip instead and the log says why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import tempfile
import traceback
from collections.abc import Iterable

from .dependencies import InstallPlan, constraints_for, pytorch_utils_available

__all__ = ["LIGHT_THE_TORCH", "install_and_report", "install_in_slicer", "slicer_shows_pip_errors"]

LIGHT_THE_TORCH = "light-the-torch>=0.5"  # what PyTorch Utils' _installLightTheTorch asks for
REQUESTER = "SegResMamba"  # the name Slicer 5.11+'s pip dialogs show

_log = logging.getLogger("SegResMamba")


def _slicer_packaging() -> bool:
    """Slicer 5.11+: ``slicer.util.pip_install`` delegates to ``slicer.packaging.pip_install``,
    which takes ``requester`` and ``show_progress``."""
    try:
        return importlib.util.find_spec("slicer.packaging") is not None
    except ModuleNotFoundError:
        return False


def slicer_shows_pip_errors() -> bool:
    """Whether a failing ``pip_install`` has already shown its own error dialog: Slicer 5.11+ in
    the application, outside testing mode (``slicer.packaging.pip_install``'s rule)."""
    import slicer

    app = getattr(slicer, "app", None)
    return _slicer_packaging() and app is not None and not app.testingEnabled()


def _pip(folder: str, packages: Iterable[str], quiet: bool = False) -> None:
    """``pip install packages`` with everything else installed now pinned as it is; ``quiet``
    (a try whose failure we handle) asks Slicer 5.11+ not to show its progress and error dialog."""
    import slicer

    packages = list(packages)
    constraints = os.path.join(folder, "installed.txt")
    with open(constraints, "w", encoding="utf-8") as file:
        file.write("\n".join(constraints_for(packages)) + "\n")
    options = {}
    if _slicer_packaging():
        options = {"show_progress": False} if quiet else {"requester": REQUESTER}
    slicer.util.pip_install(["-c", constraints, *packages], **options)


def _light_the_torch_ready(folder: str) -> bool:
    """Install light-the-torch for PyTorch Utils under the pins, unless it is there. False when
    pip cannot (no release accepts the installed pip): the caller then installs PyTorch by pip."""
    if importlib.util.find_spec("light_the_torch") is not None:
        return True
    try:
        _pip(folder, [LIGHT_THE_TORCH], quiet=True)
    except subprocess.CalledProcessError:
        _log.warning(
            "light-the-torch, which PyTorch Utils uses, could not be installed with Slicer's "
            "packages kept as they are (its releases need pip<26.1; pip's messages are above); "
            "installing PyTorch with pip instead"
        )
        return False
    importlib.invalidate_caches()
    return True


def install_in_slicer(plan: InstallPlan) -> None:
    """Carry out ``plan`` inside Slicer: PyTorch through PyTorch Utils when it is there and its
    light-the-torch can be installed without changing Slicer's packages (it picks the CUDA build
    that fits the driver), else pip; then the rest with one pip call. Each pip call pins what is
    installed at that moment, so the rest cannot replace the PyTorch just installed."""
    with tempfile.TemporaryDirectory(prefix="SegResMamba-pip-") as folder:
        if plan.torch:
            if pytorch_utils_available() and _light_the_torch_ready(folder):
                import PyTorchUtils

                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=plan.torch
                )
                if torch is None:
                    raise RuntimeError("PyTorch was not installed; see the PyTorch Utils module")
            else:
                _pip(folder, [f"torch{plan.torch}"])
        if plan.pip:
            _pip(folder, plan.pip)


@contextlib.contextmanager
def _busy():
    """A wait cursor where Slicer shows no progress of its own (before 5.11)."""
    import slicer

    app = getattr(slicer, "app", None)
    busy = app is not None and not _slicer_packaging()
    if busy:
        import qt

        app.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        yield
    finally:
        if busy:
            app.restoreOverrideCursor()


def install_and_report(plan: InstallPlan) -> bool:
    """:func:`install_in_slicer` with exactly one error dialog on failure: none of ours where
    Slicer's pip dialog has already shown pip's log. Returns whether everything installed."""
    import slicer

    try:
        with _busy():
            install_in_slicer(plan)
    except subprocess.CalledProcessError as error:
        _log.error("pip failed (exit code %s); its messages are in the log", error.returncode)
        if not slicer_shows_pip_errors():
            slicer.util.errorDisplay(
                f"Installing the packages failed: pip exited with code {error.returncode}. "
                "pip's messages are in the Python console.",
                windowTitle="SegResMamba",
            )
        return False
    except Exception as error:  # PyTorch Utils, light-the-torch, the file system: say it once
        slicer.util.errorDisplay(
            f"Installing the packages failed:\n\n{error}",
            windowTitle="SegResMamba",
            detailedText=traceback.format_exc(),
        )
        return False
    return True
