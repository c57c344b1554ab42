"""segresmamba.inference: the segment() pipeline with real networks on phantom and real scans."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers_segment import ThresholdNet, assert_same_grid, tiny_checkpoint, window_ct

from segresmamba.errors import CheckpointError, SegResMambaError
from segresmamba.inference import (
    count_windows,
    predict,
    regions_to_labelmap,
    resolve_device,
    segment,
    window_size,
)
from segresmamba.phantom import make_phantom, rotation_matrix
from segresmamba.weights import load_checkpoint

PHANTOM_BINS = [0.3, 0.65, 0.82]  # fat/air | soft tissue, liver, spleen | kidney | aorta, bone


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=5)


@pytest.fixture(scope="module")
def tiny_phantom_model(tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", "phantom")
    model, _ = load_checkpoint(path, task="phantom")
    return model


def test_windows_are_network_sizes_and_counted_as_monai_visits_them():
    assert window_size((96, 96, 96), (150, 100, 40)) == (96, 96, 64)
    assert window_size((128, 128, 128), (20, 200, 70)) == (64, 128, 96)
    net = ThresholdNet([0.5], out_channels=2)
    volume = torch.rand(1, 150, 100, 40)
    probabilities = predict(volume, net, "softmax", (96, 96, 96), torch.device("cpu"), overlap=0.3)
    assert net.calls == count_windows((150, 100, 40), (96, 96, 64), 0.3) == 4
    assert probabilities.shape == (2, 150, 100, 40) and probabilities.dtype == torch.float32
    np.testing.assert_allclose(probabilities.sum(0).numpy(), 1.0, atol=1e-5)


def test_labels_are_decided_per_voxel_on_the_input_grid(phantom):
    """ThresholdNet's answer is known per voxel: at the task spacing (the phantom's own) the
    labels must be exactly the thresholded input, on exactly the input's oblique grid."""
    ct, _ = phantom
    result = segment(ct, "phantom", ThresholdNet(PHANTOM_BINS, 6))
    assert_same_grid(result, ct)
    assert result.GetPixelID() == sitk.sitkUInt8
    expected = np.digitize(window_ct(sitk.GetArrayViewFromImage(ct)), PHANTOM_BINS)
    agreement = (sitk.GetArrayViewFromImage(result) == expected).mean()
    assert agreement > 0.999, agreement


def test_tiny_segresmamba_progress_and_grid(phantom, tiny_phantom_model):
    ct, _ = phantom
    reports = []
    result = segment(
        ct, "phantom", tiny_phantom_model, fast=True, progress=lambda *r: reports.append(r)
    )
    assert_same_grid(result, ct)
    assert result.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(result))) <= set(range(6))
    stages = [stage for stage, _ in reports]
    assert stages[0] == "preparing" and stages[-1] == "done" and "segmenting" in stages
    fractions = [fraction for _, fraction in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_flip_tta_runs_every_flip_and_keeps_an_equivariant_answer(phantom):
    ct, _ = phantom
    plain, mirrored = ThresholdNet(PHANTOM_BINS, 6), ThresholdNet(PHANTOM_BINS, 6)
    a = segment(ct, "phantom", plain, fast=True)
    b = segment(ct, "phantom", mirrored, fast=True, tta=True)
    assert mirrored.calls == 4 * plain.calls
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_extra_inputs_are_resampled_in_physical_space(phantom, caplog):
    """BraTS-style: the second input on a coarser, larger, shifted and rotated grid. A network
    that reads only that channel must find the same structures as when the input is on the
    first grid; resizing by voxel count (the gap peers have) scores about 0.7 here."""
    ct, _ = phantom
    other = sitk.Image([100, 90, 50], ct.GetPixelID())
    other.SetSpacing((2.4, 2.6, 3.1))
    direction = rotation_matrix((-6, 4, 9)) @ np.array(ct.GetDirection()).reshape(3, 3)
    other.SetDirection(tuple(direction.ravel()))
    centre = ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()])
    half = np.array(other.GetSpacing()) * (np.array(other.GetSize()) - 1) / 2
    other.SetOrigin(tuple(np.array(centre) + [15, -10, 8] - direction @ half))
    other = sitk.Resample(ct, other, sitk.Transform(), sitk.sitkLinear, -1000.0, ct.GetPixelID())
    net = ThresholdNet([-0.2, 0.6], out_channels=3, in_channels=4, channel=1)
    with caplog.at_level(logging.INFO, logger="segresmamba"):
        same = segment([ct, ct, ct, ct], "brats", net, fast=True)
        assert not [r for r in caplog.records if "different grid" in r.getMessage()]
        moved = segment([ct, other, ct, ct], "brats", net, fast=True)
    notes = [r.getMessage() for r in caplog.records if "different grid" in r.getMessage()]
    assert len(notes) == 1 and "resampled onto the first input's grid" in notes[0]
    assert_same_grid(moved, ct)
    assert moved.GetNumberOfComponentsPerPixel() == 3
    a, b = sitk.GetArrayViewFromImage(same), sitk.GetArrayViewFromImage(moved)
    for region in (0, 2):  # background-like and bright structures (kidneys, aorta, spine)
        assert dice(a[..., region] == 1, b[..., region] == 1) > 0.95


def test_brats_regions_combine_into_the_2023_and_2021_labelmaps():
    tc, wt, et = (np.zeros((12, 14, 16), np.uint8) for _ in range(3))
    wt[2:10, 2:12, 2:14] = 1
    tc[4:8, 4:10, 4:12] = 1
    et[5:7, 5:8, 5:8] = 1
    regions = sitk.Compose([sitk.GetImageFromArray(m) for m in (tc, wt, et)])
    regions.SetOrigin((3.0, -2.0, 1.0))
    for convention, et_value in (("2023", 3), ("2021", 4)):
        labelmap = regions_to_labelmap(regions, "brats", convention)
        assert_same_grid(labelmap, regions)
        labels = sitk.GetArrayViewFromImage(labelmap)
        np.testing.assert_array_equal(labels == 1, (tc == 1) & (et == 0))  # NCR = TC \ ET
        np.testing.assert_array_equal(labels == 2, (wt == 1) & (tc == 0))  # ED = WT \ TC
        np.testing.assert_array_equal(labels == et_value, et == 1)


def test_wrong_inputs_and_models_are_clear_errors(phantom):
    ct, _ = phantom
    with pytest.raises(SegResMambaError, match="takes 4 input image"):
        segment(ct, "brats", ThresholdNet([0.5], 3, in_channels=4))
    with pytest.raises(CheckpointError, match="out channels but task phantom needs 6"):
        segment(ct, "phantom", ThresholdNet([0.5], 3))
    with pytest.raises(SegResMambaError, match="overlap"):
        segment(ct, "phantom", ThresholdNet([0.5], 6), overlap=1.0)
    flat = sitk.Image(ct.GetSize(), sitk.sitkInt16)
    with pytest.raises(SegResMambaError, match="blank"):
        segment(flat, "phantom", ThresholdNet([0.5], 6))


def test_segment_accepts_paths_for_images_and_model(phantom, tmp_path):
    ct, _ = phantom
    sitk.WriteImage(ct, str(tmp_path / "ct.nrrd"))
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors", "phantom", seed=3)
    result = segment(tmp_path / "ct.nrrd", "phantom", checkpoint, device="cpu", fast=True)
    assert_same_grid(result, ct)


def test_devices():
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(SegResMambaError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type != "cuda"
        with pytest.raises(SegResMambaError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_fast_mode_warns_when_the_model_was_trained_at_another_spacing(caplog):
    """The bundled demo model learnt at 1.5 x 1.5 x 2 mm; fast mode's 3 mm must say so."""
    from segresmamba.phantom import make_phantom
    from segresmamba.weights import load_checkpoint

    demo = (
        Path(__file__).resolve().parents[1]
        / "SegResMambaSlicer/segresmamba/weights/demo/phantom-demo.safetensors"
    )
    model, header = load_checkpoint(demo, task="phantom")
    assert model.trained_spacing_mm == tuple(header["preprocessing"]["spacing_mm"])
    ct, _ = make_phantom(seed=3)
    with caplog.at_level("WARNING", logger="segresmamba.inference"):
        segment(ct, "phantom", model, device="cpu", fast=True)
    assert "trained at 1.5x1.5x2 mm but runs at 3x3x3 mm (fast mode)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="segresmamba.inference"):
        segment(ct, "phantom", model, device="cpu", fast=False)
    assert "trained at" not in caplog.text


def test_fast_mode_runs_a_small_volume_as_one_window():
    """Overlapping windows on a volume that fits one window compute the same voxels again."""
    from segresmamba.inference.sliding import SINGLE_WINDOW_GROWTH, count_windows, window_size

    image = (122, 101, 112)  # the shared CT at fast spacing (3 mm)
    assert window_size((96, 96, 96), image) == (96, 96, 96)
    assert count_windows(image, (96, 96, 96), 0.25) == 8
    roi = window_size((96, 96, 96), image, SINGLE_WINDOW_GROWTH)
    assert roi == (128, 128, 128) and count_windows(image, roi, 0.25) == 1
    # A volume that does not fit within 1.5x the patch keeps the task's windows.
    assert window_size((96, 96, 96), (244, 202, 168), SINGLE_WINDOW_GROWTH) == (96, 96, 96)
