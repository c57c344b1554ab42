"""The end-to-end check shared by the module's self-test in Slicer and the slicer-core tests.

It segments the synthetic phantom (an oblique, anisotropic CT with exact truth) through the same
code path as the Apply button's result import and checks what a user would see: one segment
per organ with the registry's names, the segmentation on the CT's exact grid, and Dice against
the truth. Written once here so the Slicer self-test and pytest cannot drift apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PhantomCheck",
    "check_phantom",
    "self_test_blocker",
    "self_test_skip_reason",
    "statistics_problems",
    "compare_statistics",
]


@dataclass
class PhantomCheck:
    """What the check measured; ``problems`` is empty when everything holds."""

    segment_names: list[str]
    dice: dict[str, float]
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def mean_dice(self) -> float:
        scored = [value for value in self.dice.values() if not np.isnan(value)]
        return float(np.mean(scored)) if scored else float("nan")

    def report(self) -> str:
        dice = ", ".join(f"{name} {value:.3f}" for name, value in self.dice.items())
        dice += f"; mean {self.mean_dice:.3f}"
        verdict = "passed" if self.ok else "FAILED: " + "; ".join(self.problems)
        return f"phantom self-test {verdict} ({self.seconds:.1f} s; Dice {dice})"


def self_test_blocker(checkpoint: str | os.PathLike | None = None) -> str | None:
    """Why the self-test cannot run here, in plain words (packages missing, demo model absent),
    or None. Slicer's *Reload and Test* calls ``runTest()`` outside a unittest runner, where a
    skip shows as a failure dialog, so the self-test reports this message as its failure."""
    from .dependencies import find_missing

    missing = find_missing()
    if missing:
        names = "; ".join(m.describe() for m in missing)
        return (
            f"SegResMamba self-test cannot run: Python packages are missing ({names}); "
            "open the module and press Install missing packages"
        )
    if checkpoint is None:
        from segresmamba.demo import demo_checkpoint
        from segresmamba.errors import SegResMambaError

        try:
            demo_checkpoint()
        except SegResMambaError as error:
            return f"SegResMamba self-test cannot run: {error}"
    elif not os.path.isfile(checkpoint):
        return f"SegResMamba self-test cannot run: the model {checkpoint} does not exist"
    return None


def self_test_skip_reason(testing: bool) -> str | None:
    """Why a CTest run should skip the self-test, or None. Under Slicer's ``--testing`` (CTest,
    the Extensions Index factory) the test runs in a unittest runner, which counts a skip as a
    pass, and the factory never installs our Python packages: failing there says nothing about
    the extension. Only missing packages skip; anywhere else (``testing`` False, i.e. *Reload and
    Test*) :func:`self_test_blocker` fails with its message."""
    from .dependencies import find_missing

    missing = find_missing() if testing else []
    if not missing:
        return None
    names = ", ".join(m.requirement.distribution for m in missing)
    return (
        f"SegResMamba self-test skipped: Python packages are not installed ({names}), as on the "
        "extensions factory; install them from the module to run it"
    )


def check_phantom(
    scene,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    min_dice: float | None = 0.9,
    seed: int | None = None,
    size: Sequence[int] | None = None,
) -> PhantomCheck:
    """Segment the demo phantom in ``scene`` and check names, count, geometry and mean Dice.

    ``checkpoint`` defaults to the bundled demo model (ModelNotAvailableError when it is not
    there: the check never fakes a result). ``min_dice`` None skips the accuracy threshold, for
    untrained test models; ``seed``/``size`` default to the demo's phantom.
    """
    from segresmamba.demo import DEMO_TASK, demo_checkpoint, dice_per_label
    from segresmamba.io.affine import itk_affine_ras
    from segresmamba.phantom import DEMO_SEED, make_phantom
    from segresmamba.tasks import get_task

    from .logic import segment_volumes
    from .segmentation import segmentation_to_labels
    from .volumes import ijk_to_world, image_to_volume_node

    task = get_task(DEMO_TASK)
    kwargs = {"size": tuple(size)} if size is not None else {}
    ct, truth = make_phantom(DEMO_SEED if seed is None else seed, **kwargs)
    volume = image_to_volume_node(scene, ct, "SegResMamba phantom CT")
    started = time.perf_counter()
    node = segment_volumes(
        scene, task, [volume], model=checkpoint or demo_checkpoint(), device=device
    )
    seconds = time.perf_counter() - started

    problems = []
    segmentation = node.GetSegmentation()
    names = [
        segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())
    ]
    expected = [label.name for label in task.foreground_labels]
    if names != expected:
        problems.append(f"segments {names}, expected {expected}")
    if not np.allclose(ijk_to_world(volume), itk_affine_ras(ct), atol=1e-9):
        problems.append("the CT volume node does not have the phantom's geometry")
    if segmentation.GetNumberOfSegments():
        problems += _grid_problems(segmentation.GetNthSegment(0), volume)

    problems += statistics_problems(scene, node, volume, task)
    labels = segmentation_to_labels(scene, node, task, volume)
    import SimpleITK as sitk

    prediction = sitk.GetImageFromArray(labels)
    prediction.CopyInformation(truth)
    if labels.shape != sitk.GetArrayViewFromImage(truth).shape:
        problems.append(f"exported labels {labels.shape} are not on the CT's grid")
    dice = dice_per_label(truth, prediction, {l.value: l.name for l in task.foreground_labels})
    if min_dice is not None:
        scored = [value for value in dice.values() if not np.isnan(value)]
        mean = float(np.mean(scored)) if scored else 0.0
        if not mean >= min_dice:  # NaN fails too
            problems.append(f"mean Dice {mean:.3f} is below {min_dice}")
    return PhantomCheck(names, dice, seconds, problems)


def _grid_problems(segment, volume) -> list[str]:
    """The segment's voxels must lie on the volume's grid: same matrix, same extent."""
    import slicer
    import vtk

    from .volumes import ijk_to_world

    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    image = segment.GetRepresentation(name)
    if image is None:
        return ["the segment has no binary labelmap"]
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    found = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    problems = []
    if not np.allclose(found, ijk_to_world(volume), atol=1e-9):
        problems.append("the segmentation's voxel grid is not the CT's (matrix differs)")
    dims = volume.GetImageData().GetDimensions()
    expected = (0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    if tuple(image.GetExtent()) != expected:
        problems.append(f"segment extent {tuple(image.GetExtent())}, CT extent {expected}")
    return problems


def statistics_problems(scene, node, volume, task) -> list[str]:
    """Where Slicer's Segment Statistics is loaded, its numbers for the result must agree with
    the engine's (``--statistics``): counts and volumes exactly, mean and standard deviation to
    rounding, the histogram percentiles to within a bin. Without the module there is nothing to
    compare (the engine's table is what the module shows then)."""
    from .statistics import result_statistics, segment_statistics_logic

    logic = segment_statistics_logic()
    if logic is None:
        return []
    engine = result_statistics(scene, node, volume, task)
    return compare_statistics(engine, result_statistics(scene, node, volume, task, logic=logic))


def compare_statistics(engine: list, slicer: list) -> list[str]:
    """What differs, beyond the tolerances of :func:`statistics_problems`, between the engine's
    rows and the same rows measured by Segment Statistics."""
    problems = []
    for ours, theirs in zip(engine, slicer):
        volumes_differ = abs(ours.volume_ml - theirs.volume_ml) > 1e-3  # rounding only
        if ours.voxel_count != theirs.voxel_count or volumes_differ:
            problems.append(
                f"Segment Statistics measures {theirs.segment} as {theirs.voxel_count} voxels "
                f"({theirs.volume_ml} mL), the engine {ours.voxel_count} ({ours.volume_ml} mL)"
            )
        if not ours.voxel_count:
            continue
        span = ours.p95 - ours.p5
        limits = {"mean": 1e-3, "std": 1e-3 + 1e-3 * ours.std, "p5": 1 + 0.02 * span}
        limits["p95"] = limits["p5"]
        for measure, limit in limits.items():
            a, b = getattr(ours, measure), getattr(theirs, measure)
            if abs(a - b) > limit:
                problems.append(f"{ours.segment} {measure}: Segment Statistics {b}, the engine {a}")
    return problems
