"""The Python packages Slicer ships, per release, for the install tests.

``SLICER_PYTHON`` is written from Slicer's own requirement files at each tag (git tags v5.10.0
and v5.12.3 of https://github.com/Slicer/Slicer): the pinned lines of
``SuperBuild/External_python-*.cmake`` (dicom, numpy, scipy, pip, setuptools, wheel, requests,
pythonqt, extension-manager and its ssl part; ``External_python-SimpleITK.cmake`` at 5.12.3) and
SimpleITK's git tag in ``External_SimpleITK.cmake`` at 5.10.0 (``slicer-v2.5.2``, installed with
``pip install .``). Slicer's VTK has no pip metadata (``SLICER_WITHOUT_METADATA``).
"""

from __future__ import annotations

SLICER_PYTHON: dict[str, dict[str, str]] = {
    "5.10.0": {
        "pydicom": "2.4.4", "six": "1.17.0", "pillow": "11.2.1", "retrying": "1.3.4",
        "dicomweb-client": "0.60.0", "chardet": "5.2.0", "couchdb": "1.2", "gitdb": "4.0.12",
        "smmap": "5.0.2", "GitPython": "3.1.44", "cryptography": "45.0.3", "PyJWT": "2.10.1",
        "wrapt": "1.17.2", "Deprecated": "1.2.18", "pycparser": "2.22", "cffi": "1.17.1",
        "PyNaCl": "1.5.0", "python-dateutil": "2.9.0.post0", "typing_extensions": "4.14.0",
        "PyGithub": "2.6.1", "numpy": "2.0.2", "pip": "25.1.1", "packaging": "25.0",
        "pyparsing": "3.2.3", "certifi": "2025.4.26", "idna": "3.10",
        "charset-normalizer": "3.4.2", "urllib3": "2.4.0", "requests": "2.32.3",
        "scipy": "1.13.1", "setuptools": "80.9.0", "wheel": "0.45.1", "SimpleITK": "2.5.2",
    },
    "5.12.3": {
        "SimpleITK": "2.5.5", "pydicom": "3.0.2", "six": "1.17.0", "pillow": "12.2.0",
        "retrying": "1.4.2", "dicomweb-client": "0.61.0", "dcmqi": "0.4.0",
        "highdicom": "0.27.0", "pyjpegls": "1.5.1", "typing_extensions": "4.15.0",
        "chardet": "7.4.3", "couchdb": "1.2", "gitdb": "4.0.12", "smmap": "5.0.3",
        "GitPython": "3.1.50", "cryptography": "48.0.0", "PyJWT": "2.13.0", "wrapt": "2.2.1",
        "Deprecated": "1.3.1", "pycparser": "3.0", "cffi": "2.0.0", "PyNaCl": "1.6.2",
        "python-dateutil": "2.9.0.post0", "PyGithub": "2.9.1", "numpy": "2.4.6",
        "pip": "26.1.1", "packaging": "26.2", "pyparsing": "3.3.2", "certifi": "2026.5.20",
        "idna": "3.16", "charset-normalizer": "3.4.7", "urllib3": "2.7.0", "requests": "2.34.2",
        "scipy": "1.17.1", "setuptools": "82.0.1", "wheel": "0.47.0",
    },
}  # fmt: skip
SLICER_WITHOUT_METADATA = {"vtk", "qt", "ctk", "slicer"}  # built by Slicer, not pip-installed
# light-the-torch 0.8.1 (its newest release), METADATA: what PyTorch Utils installs first.
LIGHT_THE_TORCH = ("light-the-torch", "0.8.1", ["pip<26.1,>=22.3", "packaging>=23.0"])
