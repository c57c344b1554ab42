"""The body crop never crops away tissue: real CTs from ../shared/data and a phantom pushed to
the edge of its field of view, segmented with and without the crop."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers_segment import ThresholdNet, assert_same_grid

from segresmamba.demo import demo_checkpoint, dice_per_label
from segresmamba.inference import prepare, segment
from segresmamba.inference.body import MARGIN_PATCHES, body_box, box_shape
from segresmamba.io import read_image
from segresmamba.phantom import DEMO_SEED, LABELS, make_phantom
from segresmamba.tasks import get_task
from segresmamba.weights import load_checkpoint

REAL_CTS = [  # (scan, its reference labels from TotalSegmentator)
    ("ct-abdomen/example_ct.nii.gz", "ct-abdomen/example_seg_fast_force_split.nii.gz"),
    ("ct-abdomen/example_ct_sm.nii.gz", "ct-abdomen/example_seg.nii.gz"),
    ("ct-abdomen/example_ct_dicom", "ct-abdomen/example_seg_dicom.nii.gz"),
]
TISSUE = [1e-4]  # ThresholdNet: label 1 wherever the CT window is above its floor (> -175 HU)


def working_indices(image: sitk.Image, mask: np.ndarray, affine: torch.Tensor) -> np.ndarray:
    """Working-grid (i, j, k) continuous indices of the centres of ``image``'s voxels in
    ``mask`` (a (z, y, x) array), through physical space."""
    z, y, x = np.nonzero(mask)
    index = np.stack([x, y, z], axis=1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    lps = index @ direction.T + np.array(image.GetOrigin())
    ras = lps * np.array([-1.0, -1.0, 1.0])
    to_index = np.linalg.inv(affine.numpy())
    return ras @ to_index[:3, :3].T + to_index[:3, 3]


def assert_inside_with_margin(points: np.ndarray, box, shape, patch, margin=True) -> None:
    """Every point inside the box, and (``margin``) half a patch from any side that is not the
    grid's."""
    for axis in range(3):
        low, high = points[:, axis].min(), points[:, axis].max()
        start, stop = box[axis].start, box[axis].stop
        assert start - 0.5 <= low and high <= stop - 0.5, (axis, low, high, box)  # nearest voxel
        if margin:
            wide = MARGIN_PATCHES * patch[axis]
            assert start == 0 or low - start >= wide, (axis, low, start)
            assert stop == shape[axis] or stop - 1 - high >= wide, (axis, high, stop)


@pytest.mark.parametrize("fast", [False, True], ids=["normal", "fast"])
@pytest.mark.parametrize("scan,labels", REAL_CTS, ids=["example_ct", "example_ct_sm", "dicom"])
def test_every_labelled_organ_and_body_voxel_of_real_cts_is_inside_the_box(
    shared_data, scan, labels, fast
):
    task = get_task("btcv")
    image = read_image(shared_data / scan)
    reference = sitk.ReadImage(str(shared_data / labels))  # its own grid (the DICOM's is flipped)
    volume = prepare([image], task, fast=fast)
    shape = tuple(volume.shape[1:])
    box = body_box(image, volume.affine, shape, task.patch_size)
    if box is None:  # the body spans the grid: the whole volume is segmented
        box = tuple(slice(0, s) for s in shape)
    organs = working_indices(reference, sitk.GetArrayViewFromImage(reference) > 0, volume.affine)
    assert len(organs) > 1000
    assert_inside_with_margin(organs, box, shape, task.patch_size)
    # soft tissue and denser anywhere in the scan (body, and here also the table) is kept
    tissue = working_indices(image, sitk.GetArrayViewFromImage(image) > -200, volume.affine)
    assert_inside_with_margin(tissue, box, shape, task.patch_size, margin=False)
    if "dicom" in scan and not fast:  # a wide field of view: the crop must really cut air
        assert np.prod(box_shape(box)) < 0.85 * np.prod(shape)


def test_crop_changes_no_label_of_the_body_on_the_real_dicom_ct(shared_data):
    """A per-voxel network (tissue above -175 HU -> 1) gives the same labels with the crop as
    without it on every voxel of the body (the largest component above -500 HU, found here at
    full resolution); the only labels the crop drops are tissue outside the body (the table),
    and the box sits where the body is (a shifted or flipped box would change labels in it)."""
    task = get_task("phantom")
    image = read_image(shared_data / "ct-abdomen" / "example_ct_dicom")
    model = ThresholdNet(TISSUE, task.out_channels)
    whole = segment(image, task, model, device="cpu", body_crop=False)
    calls_whole = model.calls
    cropped = segment(image, task, model, device="cpu", body_crop=True)
    assert_same_grid(cropped, image)
    assert model.calls - calls_whole < calls_whole  # fewer windows
    a, b = sitk.GetArrayViewFromImage(whole), sitk.GetArrayViewFromImage(cropped)
    above = sitk.BinaryThreshold(sitk.Cast(image, sitk.sitkFloat32), -500.0, 1e9, 1, 0)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(above), sortByObjectSize=True)
    body = sitk.GetArrayViewFromImage(components) == 1
    assert a[body].sum() > 100_000
    np.testing.assert_array_equal(a[body], b[body])
    differ = a != b
    assert not (b[differ]).any()  # the crop only ever removes labels, outside the body
    assert differ.sum() < 0.05 * a.sum()


def phantom_at_the_edge() -> tuple[sitk.Image, sitk.Image]:
    """The demo phantom pasted into a wider field of view of air, pushed against its +x and +y
    edges so that the body is cut by them; the anatomy keeps its physical position."""
    ct, truth = make_phantom(DEMO_SEED)
    size = np.array(ct.GetSize())
    canvas_size = size + np.array([96, 24, 0])
    offset = canvas_size - size + np.array([12, 8, 0])  # beyond the edge: the body is cut
    images = []
    for image, fill in ((ct, -1000), (truth, 0)):
        array = sitk.GetArrayViewFromImage(image)
        canvas = np.full(canvas_size[::-1], fill, dtype=array.dtype)
        keep = size - np.array([12, 8, 0])
        canvas[:, offset[1] :, offset[0] :] = array[:, : keep[1], : keep[0]]
        pasted = sitk.GetImageFromArray(canvas)
        direction = np.array(image.GetDirection()).reshape(3, 3)
        origin = np.array(image.GetOrigin()) - direction @ (offset * np.array(image.GetSpacing()))
        pasted.SetSpacing(image.GetSpacing())
        pasted.SetDirection(image.GetDirection())
        pasted.SetOrigin(tuple(origin))
        images.append(pasted)
    return images[0], images[1]


def test_phantom_at_the_edge_of_its_field_of_view_keeps_every_organ():
    ct, truth = phantom_at_the_edge()
    task = get_task("phantom")
    volume = prepare([ct], task)
    shape = tuple(volume.shape[1:])
    box = body_box(ct, volume.affine, shape, task.patch_size)
    assert box is not None and np.prod(box_shape(box)) < 0.8 * np.prod(shape)
    organs = working_indices(ct, sitk.GetArrayViewFromImage(truth) > 0, volume.affine)
    assert_inside_with_margin(organs, box, shape, task.patch_size)
    assert any(box[a].stop == shape[a] or box[a].start == 0 for a in range(2))  # at the edge

    model, _ = load_checkpoint(demo_checkpoint(), task=task)
    labels = {value: name for value, name in LABELS.items()}
    whole = segment(ct, task, model, device="cpu", body_crop=False)
    cropped = segment(ct, task, model, device="cpu", body_crop=True)
    assert_same_grid(cropped, ct)
    dice_whole = dice_per_label(truth, whole, labels)
    dice_cropped = dice_per_label(truth, cropped, labels)
    # the cut-off phantom is unlike the demo model's training data, so Dice is not high either
    # way; what matters is that the crop loses nothing the whole-volume run found
    assert np.nanmean(list(dice_whole.values())) > 0.5, dice_whole
    for name in labels.values():
        assert dice_cropped[name] >= dice_whole[name] - 0.01, (name, dice_cropped, dice_whole)


def test_a_scan_with_nothing_above_the_threshold_is_segmented_whole(shared_data):
    """No body found (all air, or not in HU): keep the whole volume rather than guess."""
    task = get_task("phantom")
    image = read_image(shared_data / "ct-abdomen" / "example_ct_dicom")
    air = sitk.Cast(image, sitk.sitkFloat32) * 0 - 1000.0
    air.CopyInformation(image)
    volume = prepare([air], task)
    assert body_box(air, volume.affine, volume.shape[1:], task.patch_size) is None
