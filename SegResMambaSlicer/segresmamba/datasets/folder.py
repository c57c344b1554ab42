"""Read an nnU-Net v2 dataset folder as users hold it, and refuse a broken one before training.

Layout (nnU-Net v2): ``dataset.json`` (``channel_names``, ``labels``, ``file_ending``, optional
``regions_class_order``), ``imagesTr/CASE_XXXX<ending>`` (one file per channel XXXX) and
``labelsTr/CASE<ending>``. NIfTI, NRRD and MHA all go through SimpleITK.

A label named ``ignore`` (nnU-Net v2's convention: the highest value) marks voxels nobody
labelled, e.g. the slices a user did not correct; it is no class of the task, and training
leaves those voxels out of the loss and the Dice. It lives in the engine, not in ``training/``,
because ``segresmamba dataset add`` writes the same folders that training reads.

Every problem is a :class:`DatasetError` with one line naming the case (or file) and the problem;
the commands print it without a traceback and exit with :data:`EXIT_DATASET` (2, "bad input" in
``segresmamba.errors.EXIT_CODES``) before any planning or training starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import EXIT_USAGE, SegResMambaError

__all__ = [
    "EXIT_DATASET",
    "FILE_ENDINGS",
    "IGNORE",
    "Case",
    "DatasetError",
    "OwnDataset",
    "check_cases",
    "check_finite",
    "count_warning",
    "load_dataset",
    "read_label",
]

EXIT_DATASET = EXIT_USAGE
"""Exit status of ``training.plan`` / ``training.train --dataset`` for a refused dataset."""

IGNORE = "ignore"
"""nnU-Net v2's name for the label of unlabelled voxels (its value must be the highest)."""

FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""Image formats read (SimpleITK); ``file_ending`` in dataset.json must be one of them."""

SPACING_TOLERANCE = 1e-3
"""Relative spacing difference tolerated between a case's channels and its label."""
ORIGIN_TOLERANCE_VOXELS = 0.01
"""Origin difference tolerated, as a share of the voxel size (1/100 voxel)."""
DIRECTION_TOLERANCE = 1e-3
"""Difference tolerated in each direction cosine."""
FLOAT_PIXELS = (sitk.sitkFloat32, sitk.sitkFloat64)
"""Pixel types that can hold NaN or infinity (integer images are finite by construction)."""
INTEGRAL_TOLERANCE = 1e-3
"""A float label value this close to an integer counts as that integer."""


class DatasetError(SegResMambaError):
    """A dataset that cannot be trained on; the message names the case or file."""


@dataclass(frozen=True)
class Case:
    """One training case: its channel files in channel order and its label file."""

    case_id: str
    images: tuple[Path, ...]
    label: Path

    def as_entry(self) -> dict[str, Any]:
        """The case as a MONAI-style dict (``image``: list of paths, ``label``: path)."""
        return {
            "case": self.case_id,
            "image": [str(p) for p in self.images],
            "label": str(self.label),
        }


@dataclass(frozen=True)
class OwnDataset:
    """A parsed dataset folder.

    ``labels`` maps label name -> value (int) or, for region-based datasets, list of values,
    without the ``ignore`` label, whose value is ``ignore_value`` (None when the dataset has
    none); ``regions_class_order`` is None for plain label maps.
    """

    folder: Path
    name: str
    description: str
    channel_names: tuple[str, ...]
    labels: dict[str, int | tuple[int, ...]]
    file_ending: str
    regions_class_order: tuple[int, ...] | None
    cases: tuple[Case, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    ignore_value: int | None = None

    @property
    def region_based(self) -> bool:
        return self.regions_class_order is not None

    def label_values(self) -> set[int]:
        """Every label-map value dataset.json allows (background 0 and ignore included)."""
        values = {0} if self.ignore_value is None else {0, self.ignore_value}
        for value in self.labels.values():
            values.update(value if isinstance(value, tuple) else (value,))
        return values


def _fail(path: Path, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}")


def _read_json(folder: Path) -> dict[str, Any]:
    path = folder / "dataset.json"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a dataset folder (it does not exist)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(path, "missing; an nnU-Net v2 dataset needs dataset.json") from None
    except (OSError, UnicodeDecodeError) as error:
        raise _fail(path, f"cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise _fail(path, f"malformed: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise _fail(path, "malformed: the top level must be a JSON object")
    return data


def _split_ignore(
    path: Path, labels: dict[str, int | tuple[int, ...]]
) -> tuple[dict[str, int | tuple[int, ...]], int | None]:
    """(the labels without ``ignore``, its value): nnU-Net v2 wants it a single, highest value."""
    if IGNORE not in labels:
        return labels, None
    value = labels.pop(IGNORE)
    others = [v for item in labels.values() for v in (item if isinstance(item, tuple) else (item,))]
    if isinstance(value, tuple) or value <= max(others):
        raise _fail(
            path, "malformed: the 'ignore' label must be one value, higher than every other label's"
        )
    return labels, value


def _parse_labels(path: Path, raw: Any) -> dict[str, int | tuple[int, ...]]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "malformed: 'labels' must be an object of name -> value")
    labels: dict[str, int | tuple[int, ...]] = {}
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise _fail(path, f"malformed: label {name!r} must be an integer or list of integers")
        if min(values) < 0 or max(values) > 255:
            raise _fail(path, f"malformed: label {name!r} value out of 0..255")
        labels[str(name)] = tuple(values) if isinstance(value, list) else int(value)
    if labels.get("background") != 0:
        raise _fail(path, "malformed: 'labels' must map 'background' to 0")
    return labels


def _check_regions(path: Path, labels: dict[str, Any], order: tuple[int, ...]) -> None:
    """nnU-Net paints the regions in the order of 'labels', each with its regions_class_order
    value: every label value must come back, so the last region covering it must paint it."""
    regions = [
        (n, v if isinstance(v, tuple) else (v,)) for n, v in labels.items() if n != "background"
    ]
    for value in sorted({v for _, covered in regions for v in covered} - {0}):
        covering = [
            (name, paint) for (name, covered), paint in zip(regions, order) if value in covered
        ]
        if covering[-1][1] != value:
            names = ", ".join(repr(name) for name, _ in covering)
            raise _fail(
                path,
                f"malformed: 'regions_class_order' loses label value {value}: of the regions "
                f"covering it ({names}), the last in 'labels' order, {covering[-1][0]!r}, paints "
                f"{covering[-1][1]}",
            )


def _parse(folder: Path, data: dict[str, Any]) -> tuple[Any, ...]:
    path = folder / "dataset.json"
    channels = data.get("channel_names", data.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise _fail(path, 'malformed: \'channel_names\' must be an object like {"0": "CT"}')
    try:
        order = sorted(int(k) for k in channels)
    except ValueError:
        raise _fail(path, "malformed: 'channel_names' keys must be 0, 1, ...") from None
    if order != list(range(len(order))):
        raise _fail(path, f"malformed: 'channel_names' keys must run 0..{len(order) - 1}")
    names = tuple(str(channels[str(i)]) for i in order)
    labels, ignore = _split_ignore(path, _parse_labels(path, data.get("labels")))
    ending = data.get("file_ending")
    if not isinstance(ending, str) or ending.lower() not in FILE_ENDINGS:
        raise _fail(path, f"malformed: 'file_ending' must be one of {', '.join(FILE_ENDINGS)}")
    regions = data.get("regions_class_order")
    region_based = any(isinstance(v, tuple) for v in labels.values())
    if regions is not None or region_based:
        foreground = [k for k in labels if k != "background"]
        if not isinstance(regions, list) or len(regions) != len(foreground):
            raise _fail(
                path,
                "malformed: region-based labels need 'regions_class_order' with one value per "
                f"region ({len(foreground)})",
            )
        regions = tuple(int(v) for v in regions)
        _check_regions(path, labels, regions)
    else:
        plain = sorted(v for v in labels.values() if isinstance(v, int))
        if plain != list(range(len(plain))):
            raise _fail(path, f"malformed: label values must be consecutive 0..N; got {plain}")
    return names, labels, ending, regions, ignore


def _find_cases(folder: Path, ending: str, channels: int) -> tuple[Case, ...]:
    images, labels = folder / "imagesTr", folder / "labelsTr"
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    image_cases = set()
    if images.is_dir():
        for item in images.iterdir():
            match = pattern.match(item.name)
            if match:
                image_cases.add(match.group(1))
    label_cases = set()
    if labels.is_dir():
        label_cases = {p.name[: -len(ending)] for p in labels.iterdir() if p.name.endswith(ending)}
    cases = []
    for case_id in sorted(image_cases | label_cases):
        files = tuple(images / f"{case_id}_{c:04d}{ending}" for c in range(channels))
        for channel, file in enumerate(files):
            if not file.is_file():
                raise DatasetError(f"case {case_id}: channel {channel} file {file} is missing")
        label = labels / f"{case_id}{ending}"
        if not label.is_file():
            raise DatasetError(f"case {case_id}: label file {label} is missing")
        cases.append(Case(case_id, files, label))
    if not cases:
        raise DatasetError(f"{folder}: no cases found (imagesTr/CASE_0000{ending}, labelsTr/)")
    return tuple(cases)


def count_warning(dataset: OwnDataset) -> str | None:
    """A line saying that ``numTraining`` disagrees with the files (a case lost, or left over),
    else None. A warning, not a refusal: the Slicer module's training sets are copied and
    edited by hand, and training uses the cases it finds."""
    declared = dataset.extra.get("numTraining")
    if declared is None or declared == len(dataset.cases):
        return None
    return (
        f"{dataset.folder / 'dataset.json'}: 'numTraining' is {declared!r} but imagesTr and "
        f"labelsTr hold {len(dataset.cases)} case(s); training uses the {len(dataset.cases)} "
        "found (check for missing files, or correct numTraining)"
    )


def load_dataset(folder: str | Path) -> OwnDataset:
    """Parse ``dataset.json`` and list the cases (files checked to exist, not yet read)."""
    folder = Path(folder)
    data = _read_json(folder)
    names, labels, ending, regions, ignore = _parse(folder, data)
    cases = _find_cases(folder, ending, len(names))
    return OwnDataset(
        folder=folder.resolve(),
        name=str(data.get("name") or folder.name),
        description=str(data.get("description") or ""),
        channel_names=names,
        labels=labels,
        file_ending=ending,
        regions_class_order=regions,
        cases=cases,
        extra={
            k: data[k]
            for k in ("colors", "terminology", "reference", "licence", "numTraining")
            if k in data
        },
        ignore_value=ignore,
    )


def _info(path: Path, case_id: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DatasetError(f"case {case_id}: {path} cannot be read as an image") from None
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise DatasetError(f"case {case_id}: {path} is not a 3D single-component image")
    return reader


def _numbers(values: Any) -> str:
    """``(1, 1, 1.2)``: plain numbers for a message, not numpy reprs like np.float64(1.0)."""
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _grid_problem(a: sitk.ImageFileReader, b: sitk.ImageFileReader) -> str | None:
    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} vs {b.GetSize()}"
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if np.any(np.abs(sa - sb) > SPACING_TOLERANCE * np.maximum(sa, sb)):
        return f"spacing {_numbers(sa)} vs {_numbers(sb)} mm"
    if np.any(np.abs(np.subtract(a.GetOrigin(), b.GetOrigin())) > ORIGIN_TOLERANCE_VOXELS * sa):
        return f"origin {_numbers(a.GetOrigin())} vs {_numbers(b.GetOrigin())} mm"
    if np.any(np.abs(np.subtract(a.GetDirection(), b.GetDirection())) > DIRECTION_TOLERANCE):
        return "direction differs"
    return None


def read_label(path: Path, case_id: str, allowed: set[int]) -> sitk.Image:
    """The label map as a uint8 image; float maps with integral values are accepted.

    Raises DatasetError for a non-integral value or one that ``allowed`` does not list.
    """
    image = sitk.ReadImage(str(path))
    voxels = sitk.GetArrayViewFromImage(image)
    found = np.unique(voxels)
    if not np.isfinite(found).all():
        bad = found[~np.isfinite(found)][0]
        raise DatasetError(f"case {case_id}: label {path.name} holds non-finite value {bad:g}")
    rounded = np.round(found)
    off = found[np.abs(found - rounded) > INTEGRAL_TOLERANCE]
    if off.size:
        raise DatasetError(f"case {case_id}: label {path.name} holds non-integral value {off[0]:g}")
    unknown = sorted({int(v) for v in rounded} - allowed)
    if unknown:
        raise DatasetError(
            f"case {case_id}: label {path.name} holds value(s) {unknown} that dataset.json "
            f"does not list (allowed {sorted(allowed)})"
        )
    if image.GetPixelID() == sitk.sitkUInt8:
        return image
    array = np.round(sitk.GetArrayFromImage(image)).astype(np.uint8)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def check_finite(path: Path, case_id: str, channel: int) -> None:
    """Refuse an image holding NaN or infinity: one such voxel makes every loss NaN, and the
    run would quietly train a model of NaN weights. Only float files can hold them."""
    image = sitk.ReadImage(str(path))  # kept alive while its view is read
    voxels = sitk.GetArrayViewFromImage(image)
    bad = voxels.size - int(np.count_nonzero(np.isfinite(voxels)))
    if bad:
        raise DatasetError(
            f"case {case_id}: channel {channel} ({path.name}) holds {bad} non-finite voxel(s) "
            "(NaN or infinity); fix or remove the case"
        )


def check_cases(dataset: OwnDataset) -> None:
    """Read every case's headers, float images' voxels and label values; raise DatasetError at
    the first problem."""
    allowed = dataset.label_values()
    for case in dataset.cases:
        label = _info(case.label, case.case_id)
        for channel, path in enumerate(case.images):
            info = _info(path, case.case_id)
            problem = _grid_problem(info, label)
            if problem:
                raise DatasetError(
                    f"case {case.case_id}: channel {channel} ({path.name}) and label are on "
                    f"different grids: {problem}"
                )
            if info.GetPixelID() in FLOAT_PIXELS:
                check_finite(path, case.case_id, channel)
        read_label(case.label, case.case_id, allowed)
