"""Text is UTF-8 whatever the locale (issue 20, point 32).

SimpleITK's DICOM writer (GDCM) leaves the process's LC_CTYPE at "C", so after it Python's
default text encoding is ASCII: a child's output read with bare ``text=True``, or a file read
without ``encoding=``, then fails on the first "³" or tqdm bar. Every text read, write and
child's output must name UTF-8. One test scans the code for the calls that do not; the others
run real code after GDCM has changed the locale, and under ``LC_ALL=C`` without UTF-8 mode.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_CALLS = {"run", "Popen", "check_output", "check_call", "call"}
TEXT_SWITCHES = {"text", "universal_newlines", "errors"}  # each makes a child's pipes text


def _python_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, encoding="utf-8", check=True
    ).stdout.split()
    return [REPO / name for name in listed if (REPO / name).is_file()]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords if k.arg}


def _mode(call: ast.Call, position: int, default: str) -> str | None:
    """The mode string of an open-like call (None when it is not a literal)."""
    value = _keywords(call).get("mode")
    if value is None and len(call.args) > position:
        value = call.args[position]
    if value is None:
        return default
    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None


def _problem(call: ast.Call) -> str | None:
    """Why ``call`` reads or writes text in the locale's encoding, or None."""
    func, keywords = call.func, _keywords(call)
    if "encoding" in keywords:
        return None
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    owner = getattr(func.value, "id", None) if isinstance(func, ast.Attribute) else None
    if owner == "subprocess" and name in SUBPROCESS_CALLS:
        switches = TEXT_SWITCHES & keywords.keys()
        if any(
            not (isinstance(keywords[k], ast.Constant) and not keywords[k].value) for k in switches
        ):
            return f"subprocess.{name} with {', '.join(sorted(switches))} but no encoding"
        return None
    if name in ("read_text", "write_text") and isinstance(func, ast.Attribute):
        if len(call.args) < (1 if name == "read_text" else 2):
            return f".{name}() without encoding"
        return None
    if name in ("NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile"):
        mode = _mode(call, 0, "w+b")
    elif name == "TextIOWrapper":
        return "TextIOWrapper without encoding"
    elif (
        isinstance(func, ast.Name)
        and name == "open"
        or (owner, name) in (("io", "open"), ("os", "fdopen"))
    ):
        mode = _mode(call, 1, "r")
    elif name == "open" and owner in ("gzip", "bz2", "lzma"):
        mode = _mode(call, 1, "rb")
    elif name == "open" and isinstance(func, ast.Attribute) and owner not in ("tarfile", "zipfile"):
        # Path.open(mode="r"); a non-literal first argument is another API (Qt, zip members)
        if call.args and not isinstance(call.args[0], ast.Constant):
            return None
        mode = _mode(call, 0, "r")
    else:
        return None
    if mode is not None and "b" not in mode:
        return f"{name}(mode {mode!r}) without encoding"
    return None


def locale_dependent_calls(paths) -> list[str]:
    """``file:line: why`` for every call in ``paths`` that relies on the locale's encoding."""
    found = []
    for path in paths:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (why := _problem(node)):
                name = Path(path).relative_to(REPO) if REPO in Path(path).parents else path
                found.append(f"{name}:{node.lineno}: {why}")
    return found


def test_the_scan_finds_each_kind_of_locale_dependent_call(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import subprocess, os, io, tempfile\n"
        "subprocess.run(['x'], text=True)\n"
        "subprocess.run(['x'], capture_output=True, errors='replace')\n"
        "subprocess.run(['x'], text=True, encoding='utf-8')\n"
        "subprocess.Popen(['x'], stdout=subprocess.PIPE)\n"
        "open('a')\n"
        "open('a', 'rb')\n"
        "open('a', 'w', encoding='utf-8')\n"
        "os.fdopen(3, 'w')\n"
        "path.read_text()\n"
        "path.write_text('x')\n"
        "path.write_text('x', 'utf-8')\n"
        "path.open()\n"
        "path.open('rb')\n"
        "ui_file.open(qt.QIODevice.ReadOnly)\n"
        "tempfile.NamedTemporaryFile('w')\n"
        "tempfile.NamedTemporaryFile()\n",
        encoding="utf-8",
    )
    found = locale_dependent_calls([sample])
    lines = sorted(int(line.split(":")[1]) for line in found)
    assert lines == [2, 3, 6, 9, 10, 11, 13, 16], found


def test_no_text_is_read_written_or_decoded_in_the_locales_encoding():
    found = locale_dependent_calls(_python_files())
    assert not found, "name encoding='utf-8' in:\n" + "\n".join(found)


CHILD = """
import locale, sys
from pathlib import Path
import SimpleITK as sitk
import numpy as np

folder = Path(sys.argv[1])
if sys.argv[2] == "gdcm":  # the real trigger: GDCM writes a slice with a position, which leaves
    slice_ = sitk.GetImageFromArray(np.zeros((1, 4, 4), np.int16))  # LC_CTYPE at C
    slice_.SetMetaData("0020|0032", "0\\\\0\\\\5")  # Image Position (Patient)
    sitk.WriteImage(slice_, str(folder / "slice.dcm"))
print("encoding", locale.getpreferredencoding(False), flush=True)

from segresmamba.bench import report

markdown = report.regenerate_markdown(folder / "docs")  # it holds a superscript 3
assert "\\u00b3" in markdown.read_text(encoding="utf-8")
if sys.argv[2] == "gdcm":  # a child's UTF-8 output, read by a test helper
    sys.path.insert(0, sys.argv[3])
    from helpers_owndata import dataset_add

    name = "M\\u00fcller.nii.gz"
    refused = dataset_add("ds", "--case", "c1", "--labels", name, "-i", "CT=" + name, cwd=folder)
    assert f"error: labels {name} do not exist" in refused.stderr, ascii(refused.stderr)

# The Slicer module's way to run the engine: its child writes, and it reads, UTF-8.
from SegResMambaSlicerLib.process import EngineProcess, engine_environment

job = EngineProcess([sys.executable, "-c", "print('error: ' + chr(179))"], engine_environment())
job.start()
job.wait(120)
assert job.error_message == "\\u00b3", ascii(job.error_message)
print("done", flush=True)
"""


def test_text_stays_utf8_after_gdcm_and_under_lc_all_c(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(REPO / "docs" / "benchmarks.md", docs / "benchmarks.md")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUTF8": "0"}
    runs = {  # LC_ALL=C alone would turn Python's UTF-8 mode on; PYTHONUTF8=0 keeps it off
        "gdcm": {**env, "LC_ALL": "C.UTF-8"},  # starts in UTF-8, until GDCM writes
        "LC_ALL=C": {**env, "LC_ALL": "C"},
    }
    for what, environment in runs.items():
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path), what, str(REPO / "Testing")],
            env=environment,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=300,
        )
        assert done.returncode == 0 and "done" in done.stdout, f"{what}:{done.stdout}{done.stderr}"
        assert "encoding ANSI_X3.4-1968" in done.stdout, what  # the locale really is ASCII
