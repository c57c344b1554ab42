"""Import MONAI for a segmentation process without the plotting, logging and SciPy packages it
pulls in but inference never uses.

``import monai.anything`` always runs ``monai/__init__.py``, which imports every MONAI submodule
(there is no switch for it in MONAI 1.4 to 1.6), and those import, eagerly, each optional
package that happens to be installed: SciPy's ndimage, sparse, optimize, stats..., matplotlib,
TensorBoard, scikit-image. MONAI itself takes about 0.4 s to import on this project's two-core
machine; with the training extras installed (``pip install .[train]``) the whole import takes
1.5 to 4 s, most of a segmentation's start-up. MONAI treats these packages as optional: where
one is missing, its features that need it raise ``OptionalImportError`` when used.

Inference uses MetaTensor, Orientation (nibabel), Spacing with bilinear or nearest resampling
(torch's grid_sample), the intensity transforms and sliding_window_inference (torch): none of
them touches these packages. So the ``segment`` and ``demo`` commands, which own their process,
import MONAI with these packages hidden and then un-hidden: later imports of them (by our code
or a writer) work as usual; only MONAI's own handles to them are its missing-package stand-ins.
A MONAI feature added to the inference path that needs one of them fails loudly in
``Testing/test_monai_light.py`` and the CLI tests, never silently. Library users and training
import MONAI as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["UNUSED_BY_INFERENCE", "import_monai_for_inference"]

UNUSED_BY_INFERENCE = (
    "matplotlib",
    "mpl_toolkits",
    "tensorboard",
    "tensorboardX",
    "skimage",
    "ignite",
    "pandas",
    "scipy.constants",
    "scipy.fft",
    "scipy.integrate",
    "scipy.interpolate",
    "scipy.linalg",
    "scipy.ndimage",
    "scipy.optimize",
    "scipy.signal",
    "scipy.sparse",
    "scipy.spatial",
    "scipy.special",
    "scipy.stats",
)
"""Packages MONAI's import loads when installed and that inference never calls."""


@contextmanager
def _hidden(names: tuple[str, ...]) -> Iterator[None]:
    """Make ``import NAME`` raise ImportError inside the block (a ``None`` entry in
    ``sys.modules``, Python's documented way), for the names not imported already."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def import_monai_for_inference() -> None:
    """Import MONAI without :data:`UNUSED_BY_INFERENCE`, unless it is imported already."""
    if "monai" in sys.modules:
        return
    with _hidden(UNUSED_BY_INFERENCE):
        import monai  # noqa: F401
