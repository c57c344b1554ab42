"""The training recipe of each task: the paper's Appendix A, plus our own for the phantom.

Only optimisation and augmentation live here. What the network sees (spacing, patch size,
intensity rule, network widths) comes from the task registry (``segresmamba.tasks.get_task``),
so a model trained here is preprocessed at inference exactly as it was in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from segresmamba.phantom import DEMO_SEED

__all__ = [
    "PHANTOM_TRAIN_SEEDS",
    "PHANTOM_VALIDATION_SEEDS",
    "RECIPES",
    "Recipe",
    "get_recipe",
    "phantom_seeds",
]


@dataclass(frozen=True)
class Recipe:
    """How one task is trained.

    Attributes:
        steps: training steps (optimizer updates); 0 when the length is given in ``epochs``.
        epochs: passes over the training list (turned into steps once its length is known).
        learning_rate, weight_decay: AdamW; the cosine schedule anneals the rate to 0.
        loss: "dice" (MONAI DiceLoss, the paper's choice) or "dicece" (Dice + cross-entropy).
        batch_size: volumes per step and per process; each gives ``samples_per_volume`` patches.
        crop_foreground: crop training volumes to the bounding box of the non-zero (after the
            intensity rule) voxels first (CropForegroundd), as the paper's Appendix A lists.
            Validation never crops, because ``segment()`` does not: it scores what users get.
        crop: "pos_neg" (RandCropByPosNegLabeld, half the patches centred on a structure) or
            "random" (RandSpatialCropd, the paper's BraTS "random spatial cropping").
        pos, neg: the pos_neg odds of a patch centred on foreground vs background (1:1; own-data
            plans oversample the foreground, 2:1).
        flip_prob: probability of a flip along each axis (0 turns flips off).
        rotate90_prob: probability of a random 90 degree rotation in the axial plane.
        intensity_shift: offset range of RandShiftIntensityd (0 turns it off) and its probability.
        intensity_scale: factor range of RandScaleIntensityd (0 turns it off) and its probability.
        val_every: validate every this many steps.
        source: where the numbers come from.
    """

    steps: int = 0
    epochs: int = 0
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    loss: str = "dice"
    batch_size: int = 1
    samples_per_volume: int = 4
    crop_foreground: bool = True
    crop: str = "pos_neg"
    pos: float = 1.0
    neg: float = 1.0
    flip_prob: float = 0.1
    rotate90_prob: float = 0.1
    intensity_shift: float = 0.1
    intensity_shift_prob: float = 0.5
    intensity_scale: float = 0.0
    intensity_scale_prob: float = 0.0
    val_every: int = 500
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out


RECIPES: dict[str, Recipe] = {
    "btcv": Recipe(
        steps=25_000,
        batch_size=1,
        samples_per_volume=4,
        val_every=500,
        source="paper Appendix A.2 (25,000 steps, Adam lr 1e-4, DiceLoss, ScaleIntensityRange, "
        "Orientation, CropForeground, Spacing); patch sampling and augmentation as MONAI's BTCV "
        "UNETR/SwinUNETR tutorial (4 pos/neg patches per volume, flips and 90 degree rotations "
        "p=0.1, intensity shift 0.1 p=0.5)",
    ),
    "brats": Recipe(
        epochs=200,
        batch_size=1,
        samples_per_volume=1,
        crop="random",
        flip_prob=0.5,
        rotate90_prob=0.0,
        intensity_shift=0.1,
        intensity_shift_prob=1.0,
        intensity_scale=0.1,
        intensity_scale_prob=1.0,
        val_every=0,  # 0: once per epoch
        source="paper Appendix A.1 (5 folds x 200 epochs, cosine annealing, weight decay 1e-5, "
        "gradient scaling, Dice loss, foreground crop, random spatial crop, flips p=0.5 per "
        "axis, random intensity scaling); factors as MONAI's BraTS tutorial",
    ),
    "spleen": Recipe(
        epochs=100,
        batch_size=1,
        samples_per_volume=4,
        val_every=0,
        source="paper Appendix A.3 (100 epochs, Adam lr 1e-4, DiceLoss, ScaleIntensityRange, "
        "Orientation, CropForeground, Spacing); patch sampling and augmentation as for BTCV",
    ),
    "phantom": Recipe(
        steps=2000,
        learning_rate=2e-3,
        loss="dicece",
        batch_size=1,
        samples_per_volume=2,
        crop_foreground=False,
        flip_prob=0.0,
        rotate90_prob=0.0,
        intensity_shift=0.0,
        intensity_shift_prob=0.0,
        val_every=200,
        source="ours (not in the paper): a short CPU run that trains the bundled demo model",
        notes=(
            "no foreground crop: segment() runs windows over the whole scan, air included; a "
            "model trained on body-cropped volumes only scored 0.48 mean Dice there (0.87 on "
            "the cropped validation volumes)",
            "no flips or rotations: they would put the liver on the patient's left and swap the "
            "left and right kidneys, which the phantom's labels (like BTCV's) tell apart",
            "no intensity shifts: the phantom's tissues have fixed Hounsfield units, and spleen "
            "(50 HU) differs from soft tissue (40 HU) by less than the noise (15 HU); a 0.05 "
            "shift (21 HU) left the spleen at 0.85 Dice after 1,200 steps",
            "learning rate 2e-3 and Dice+CE so that a CPU run of about 20 minutes suffices",
        ),
    ),
}
"""The recipe of each task, by task name."""

PHANTOM_VALIDATION_SEEDS = tuple(range(0, 4))
"""Validation phantoms (seed 0 included, so ``make_phantom(0)`` is never trained on). More
validation phantoms continue the range (4, 5, ...); they stay below the training seeds as long
as there are fewer than 100."""

PHANTOM_TRAIN_SEEDS = tuple(range(100, 124))
"""Training phantoms; disjoint from the validation seeds and from the demo's ``DEMO_SEED``."""

assert not set(PHANTOM_TRAIN_SEEDS) & set(PHANTOM_VALIDATION_SEEDS)
assert DEMO_SEED not in PHANTOM_TRAIN_SEEDS + PHANTOM_VALIDATION_SEEDS


def phantom_seeds(default: tuple[int, ...], count: int | None) -> tuple[int, ...]:
    """The first ``count`` seeds of a phantom seed list, continued consecutively past its end."""
    count = count or len(default)
    return tuple(range(default[0], default[0] + count))


def get_recipe(task_name: str) -> Recipe:
    """The recipe for ``task_name``; KeyError naming the known tasks otherwise."""
    try:
        return RECIPES[task_name]
    except KeyError:
        raise KeyError(
            f"no training recipe for task {task_name!r}; known: {', '.join(RECIPES)}"
        ) from None
