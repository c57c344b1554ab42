"""A deterministic synthetic abdominal CT with exact ground truth, for demos, tests and training.

Real scans cannot ship with the project and their labels are model output; this phantom gives
a CT-like volume (Hounsfield units, noise, oblique acquisition) whose truth is known exactly, so
the demo can print a Dice that means something and the whole pipeline can be trained and
checked on any laptop in minutes. The geometry is deliberately awkward (oblique direction,
non-zero origin, anisotropic 1.5 x 1.5 x 2 mm voxels) so that a pipeline that gets orientation
wrong fails on it.

Labels (the ``phantom`` task uses the same): 1 liver, 2 spleen, 3 right kidney, 4 left kidney,
5 aorta. Anatomy follows the patient: the liver and right kidney lie on the patient's right,
which is -x in ITK's LPS physical space (+x in RAS). The spine is bone but not labelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk

__all__ = ["DEMO_SEED", "HU", "LABELS", "iter_phantoms", "make_phantom", "rotation_matrix"]

LABELS = {1: "liver", 2: "spleen", 3: "right kidney", 4: "left kidney", 5: "aorta"}
"""Label value -> structure, as in the truth image."""

HU = {
    "air": -1000.0,
    "fat": -100.0,
    "soft tissue": 40.0,
    "liver": 60.0,
    "spleen": 50.0,
    "kidney": 150.0,
    "aorta": 200.0,
    "bone": 700.0,
}
"""Mean Hounsfield units of each tissue before noise (contrast-enhanced, portal-venous-like)."""

NOISE_HU = 15.0

DEMO_SEED = 999_999
"""The phantom ``segresmamba demo`` segments; training and validation must not use this seed,
so the Dice the demo prints is measured on an unseen phantom."""


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix from angles about x, then y, then z (degrees): R = Rz Ry Rx."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _inside(points: np.ndarray, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Voxels inside an axis-aligned ellipsoid (``inf`` radius = unbounded along that axis)."""
    total = np.zeros(points.shape[1:], dtype=np.float32)
    for axis in range(3):
        if np.isfinite(radii[axis]):
            total += ((points[axis] - center[axis]) / radii[axis]) ** 2
    return total <= 1.0


def make_phantom(
    seed: int = 0,
    size: Sequence[int] = (128, 128, 64),
    spacing_mm: Sequence[float] = (1.5, 1.5, 2.0),
) -> tuple[sitk.Image, sitk.Image]:
    """Return ``(ct, truth)``: an int16 CT in HU and its uint8 labels on the same oblique grid.

    The same seed always gives the same images; other seeds move and resize every organ a
    little and change the obliquity, which is what a model trained on the phantom must cope
    with. ``size`` is (x, y, z) voxels; the anatomy scales with the field of view.
    """
    rng = np.random.default_rng(seed)
    size = tuple(int(s) for s in size)
    spacing = np.array(spacing_mm, dtype=float)
    if len(size) != 3 or min(size) < 8 or len(spacing) != 3 or (spacing <= 0).any():
        raise ValueError(
            f"size must be 3 sizes >= 8 and spacing 3 positive numbers; got {size}, {spacing_mm}"
        )

    # Oblique acquisition: a few degrees about each axis, signs and sizes varying by seed.
    angles = rng.uniform(3.0, 8.0, 3) * rng.choice([-1.0, 1.0], 3) * np.array([0.6, 0.4, 1.0])
    direction = rotation_matrix(angles)
    extent = spacing * (np.array(size) - 1)
    center = np.array([rng.uniform(-20, 20), rng.uniform(-30, 0), rng.uniform(-400, -300)])
    origin = center - direction @ (extent / 2)

    # Physical position of every voxel relative to the volume centre, (3, z, y, x), LPS mm.
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in size[::-1]), indexing="ij")
    index_mm = np.stack([i * spacing[0], j * spacing[1], k * spacing[2]])
    offset = (direction.astype(np.float32) @ index_mm.reshape(3, -1)).reshape(index_mm.shape)
    points = offset - (direction @ (extent / 2)).astype(np.float32)[:, None, None, None]
    del i, j, k, index_mm, offset

    def jitter(scale: float = 0.06) -> float:
        return float(rng.uniform(1 - scale, 1 + scale))

    # Body: an elliptic cylinder filling most of the axial field of view, with a fat rim.
    half = extent / 2
    a, b, h = 0.85 * half[0] * jitter(), 0.66 * half[1] * jitter(), half[2]
    body = _inside(points, (0, 0, 0), (a, b, np.inf))
    inner = _inside(points, (0, 0, 0), (0.88 * a, 0.86 * b, np.inf))
    ct = np.full(points.shape[1:], HU["air"], dtype=np.float32)
    ct[body] = HU["fat"]
    ct[inner] = HU["soft tissue"]
    truth = np.zeros(points.shape[1:], dtype=np.uint8)

    def shift(x: float, y: float, z: float, scale: float = 0.05) -> tuple[float, float, float]:
        return (
            x + rng.uniform(-scale, scale) * a,
            y + rng.uniform(-scale, scale) * b,
            z + rng.uniform(-scale, scale) * h,
        )

    # Spine: a vertebral column behind the aorta, bone but no label (a distractor).
    spine = _inside(
        points, shift(0, 0.58 * b, 0, 0.02), (0.2 * b * jitter(), 0.2 * b * jitter(), np.inf)
    )
    ct[spine] = HU["bone"]

    organs = [  # (label, tissue, centre, radii); later organs are painted over earlier ones
        (
            1,
            "liver",
            shift(-0.45 * a, -0.1 * b, 0.25 * h),
            (0.5 * a * jitter(), 0.62 * b * jitter(), 0.7 * h * jitter()),
        ),
        (
            2,
            "spleen",
            shift(0.58 * a, 0.25 * b, 0.3 * h),
            (0.2 * a * jitter(), 0.32 * b * jitter(), 0.4 * h * jitter()),
        ),
        (
            3,
            "kidney",
            shift(-0.4 * a, 0.45 * b, -0.2 * h),
            (0.15 * a * jitter(), 0.2 * b * jitter(), 0.45 * h * jitter()),
        ),
        (
            4,
            "kidney",
            shift(0.4 * a, 0.45 * b, -0.15 * h),
            (0.15 * a * jitter(), 0.2 * b * jitter(), 0.45 * h * jitter()),
        ),
        (
            5,
            "aorta",
            shift(0.1 * a, 0.2 * b, 0, 0.02),
            (0.11 * b * jitter(), 0.11 * b * jitter(), np.inf),
        ),
    ]
    for label, tissue, organ_center, radii in organs:
        region = _inside(points, organ_center, radii) & inner & ~spine
        ct[region] = HU[tissue]
        truth[region] = label

    ct += rng.normal(0.0, NOISE_HU, ct.shape).astype(np.float32)
    ct_image = sitk.GetImageFromArray(np.round(ct).astype(np.int16))
    truth_image = sitk.GetImageFromArray(truth)
    for image in (ct_image, truth_image):
        image.SetSpacing(tuple(float(s) for s in spacing))
        image.SetOrigin(tuple(float(o) for o in origin))
        image.SetDirection(tuple(float(d) for d in direction.ravel()))
    return ct_image, truth_image


def iter_phantoms(seeds: Iterable[int], **kwargs) -> Iterator[tuple[sitk.Image, sitk.Image]]:
    """Yield ``make_phantom(seed, **kwargs)`` for each seed: a training or validation set that
    anyone can regenerate bit for bit from the seed list alone."""
    for seed in seeds:
        yield make_phantom(seed, **kwargs)
