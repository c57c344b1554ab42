"""Geometry on real scans: whatever the orientation, direction or origin of the input, the labels
come back on exactly its grid and on the same physical points.

Uses ../shared/data (``shared_data`` fixture). ThresholdNet's answer is known voxel by voxel,
so a flip, a transposed axis or a half-voxel shift shows up as disagreement; a tiny random
SegResMamba checks that the real network sees the same RAS volume whatever the file's layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from helpers_segment import ThresholdNet, assert_same_grid, tiny_checkpoint, window_ct

from segresmamba.inference import segment
from segresmamba.io import read_image
from segresmamba.phantom import make_phantom, rotation_matrix
from segresmamba.weights import load_checkpoint

CT_BINS = [0.3, 0.55, 0.8]  # air/fat | soft tissue | enhanced organs | bone, contrast
TASK = "phantom"  # btcv's CT window and spacings with 6 outputs instead of 14: a cheaper test


def with_origin(image: sitk.Image, shift_mm) -> sitk.Image:
    moved = sitk.Image(image)
    moved.SetOrigin(tuple(np.add(image.GetOrigin(), shift_mm)))
    return moved


def with_direction(image: sitk.Image, degrees) -> sitk.Image:
    """The same voxels on a grid turned about its centre (a different physical placement)."""
    turned = sitk.Image(image)
    direction = rotation_matrix(degrees) @ np.array(image.GetDirection()).reshape(3, 3)
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
    half = np.array(image.GetSpacing()) * (np.array(image.GetSize()) - 1) / 2
    turned.SetDirection(tuple(direction.ravel()))
    turned.SetOrigin(tuple(np.array(centre) - direction @ half))
    return turned


def variants(ct: sitk.Image) -> dict[str, sitk.Image]:
    return {
        "as stored": ct,
        "LPS": sitk.DICOMOrient(ct, "LPS"),
        "PIR": with_origin(sitk.DICOMOrient(ct, "PIR"), (31.5, -12.25, 250.0)),
        "SLA": sitk.DICOMOrient(ct, "SLA"),
        "oblique": with_origin(with_direction(ct, (7, -4, 11)), (-20.0, 5.5, -3.0)),
    }


@pytest.fixture(scope="module")
def example_ct(shared_data):
    return read_image(shared_data / "ct-abdomen" / "example_ct.nii.gz")


@pytest.mark.parametrize("name", ["as stored", "LPS", "PIR", "SLA", "oblique"])
def test_real_ct_comes_back_on_its_own_grid_voxel_for_voxel(example_ct, name):
    """Fast spacing (3 mm) is this CT's own spacing: every label must be exactly the
    thresholded voxel under it, for every orientation, direction and origin."""
    image = variants(example_ct)[name]
    result = segment(image, TASK, ThresholdNet(CT_BINS, 6), fast=True)
    assert_same_grid(result, image)
    assert result.GetPixelID() == sitk.sitkUInt8
    expected = np.digitize(window_ct(sitk.GetArrayViewFromImage(image)), CT_BINS)
    agreement = (sitk.GetArrayViewFromImage(result) == expected).mean()
    assert agreement > 0.999, agreement


def test_labels_land_on_the_same_physical_points_at_the_task_spacing(shared_data):
    """At the task spacing (1.5 x 1.5 x 2 mm: resampled there and back) reoriented copies give
    the same labels at the same physical points as the file as stored, and a moved origin
    moves the labels with the image."""
    ct = read_image(shared_data / "ct-abdomen" / "example_ct_sm.nii.gz")
    net = ThresholdNet(CT_BINS, 6)
    reference = sitk.GetArrayFromImage(segment(ct, TASK, net))
    assert len(np.unique(reference)) == 4
    for orientation in ("LPS", "PIR", "SLA"):
        image = sitk.DICOMOrient(ct, orientation)
        result = segment(image, TASK, net)
        assert_same_grid(result, image)
        on_points = sitk.Resample(result, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 255)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(on_points), reference)
    moved = with_origin(ct, (31.5, -12.25, 250.0))
    result = segment(moved, TASK, net)
    assert_same_grid(result, moved)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(result), reference)


def test_the_network_sees_the_same_volume_whatever_the_file_layout(tmp_path):
    """A real (tiny, random) SegResMamba is not mirror-invariant, so equal answers for the
    phantom stored in two layouts show that both reach it as the same RAS volume."""
    model, _ = load_checkpoint(tiny_checkpoint(tmp_path / "tiny.safetensors", "phantom"))
    ct, _ = make_phantom(seed=2)
    reference = segment(ct, "phantom", model, fast=True)
    counts = np.bincount(sitk.GetArrayViewFromImage(reference).ravel(), minlength=6)
    assert (counts > 0).sum() >= 2  # a non-trivial answer to compare
    flipped = sitk.DICOMOrient(ct, "PIR")
    result = segment(flipped, "phantom", model, fast=True)
    assert_same_grid(result, flipped)
    on_points = sitk.Resample(result, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 255)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(on_points), sitk.GetArrayViewFromImage(reference)
    )
