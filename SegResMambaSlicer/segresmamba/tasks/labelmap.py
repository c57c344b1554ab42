"""The combined BraTS labelmap and its overlapping regions (TC, WT, ET), both ways.

BraTS networks predict three overlapping regions with sigmoid outputs; clinicians and the BraTS
files use one labelmap with disjoint labels. BraTS 2023 writes 1 necrotic tumour core, 2 edema,
3 enhancing tumour; BraTS 2021 and earlier wrote 4 for enhancing tumour. The rules live in
``tasks.json`` so that training (labelmap -> regions) and inference (regions -> labelmap) agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SegResMambaError
from .types import Terminology

CONVENTIONS = ("2023", "2021")
"""BraTS labelmap conventions: "2023" (enhancing tumour = 3) and "2021" (enhancing tumour = 4)."""


@dataclass(frozen=True)
class LabelmapLabel:
    """One label of the combined labelmap; ``value`` in the 2023 convention, ``value_2021``."""

    value: int
    value_2021: int
    name: str
    abbreviation: str
    color: tuple[float, float, float]
    terminology: Terminology

    def value_in(self, convention: str = "2023") -> int:
        return self.value_2021 if _check_convention(convention) == "2021" else self.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "value_2021": self.value_2021,
            "name": self.name,
            "abbreviation": self.abbreviation,
            "color": list(self.color),
            "terminology": self.terminology.to_dict(),
        }


@dataclass(frozen=True)
class Labelmap:
    """Rules between the sigmoid regions and the combined labelmap.

    Attributes:
        labels: the labelmap's labels (background excluded).
        regions: region abbreviation -> the 2023 labelmap values it covers (TC: 1, 3 ...).
        paint_order: (region, value) pairs; regions -> labelmap paints each region's value in this
            order, later ones winning, so ET stays ET even where a prediction is not nested.
        region_order: region abbreviations in output channel order (the task's labels).
    """

    labels: tuple[LabelmapLabel, ...]
    regions: dict[str, tuple[int, ...]]
    paint_order: tuple[tuple[str, int], ...]
    region_order: tuple[str, ...]

    def label(self, key: int | str, convention: str = "2023") -> LabelmapLabel:
        for label in self.labels:
            if key in (label.value_in(convention), label.name, label.abbreviation):
                return label
        raise SegResMambaError(f"the BraTS {convention} labelmap has no label {key!r}")

    def values(self, convention: str = "2023") -> tuple[int, ...]:
        """The labelmap values (background excluded) in a convention: (1, 2, 3) or (1, 2, 4)."""
        return tuple(label.value_in(convention) for label in self.labels)

    def from_regions(self, regions: np.ndarray, convention: str = "2023") -> np.ndarray:
        """Combine region masks (channels in ``region_order``, e.g. thresholded sigmoids) into
        one uint8 labelmap."""
        masks = np.asarray(regions)
        if masks.shape[0] != len(self.region_order):
            raise SegResMambaError(
                f"expected {len(self.region_order)} region masks ({', '.join(self.region_order)}),"
                f" got {masks.shape[0]}"
            )
        by_value = {label.value: label.value_in(convention) for label in self.labels}
        out = np.zeros(masks.shape[1:], dtype=np.uint8)
        for region, value in self.paint_order:
            out[masks[self.region_order.index(region)].astype(bool)] = by_value[value]
        return out

    def to_regions(self, labelmap: np.ndarray, convention: str = "2023") -> np.ndarray:
        """Split a labelmap into boolean region masks, channels in ``region_order``.

        Raises SegResMambaError when the labelmap holds a value this convention does not use
        (for example 4 read as BraTS 2023), so a wrong convention is never silently ignored.
        """
        labelmap = np.asarray(labelmap)
        known = {0, *self.values(convention)}
        found = {int(v) for v in np.unique(labelmap)}
        if found - known:
            other = "2021" if _check_convention(convention) == "2023" else "2023"
            raise SegResMambaError(
                f"the labelmap holds value(s) {sorted(found - known)}, which the BraTS "
                f"{convention} convention does not use (values {sorted(known)}); "
                f"is it in the BraTS {other} convention?"
            )
        to_convention = {label.value: label.value_in(convention) for label in self.labels}
        masks = [
            np.isin(labelmap, [to_convention[v] for v in self.regions[region]])
            for region in self.region_order
        ]
        return np.stack(masks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": [label.to_dict() for label in self.labels],
            "regions": {k: list(v) for k, v in self.regions.items()},
            "paint_order": [{"region": r, "value": v} for r, v in self.paint_order],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], region_order: tuple[str, ...]) -> Labelmap:
        labels = tuple(
            LabelmapLabel(
                value=int(item["value"]),
                value_2021=int(item["value_2021"]),
                name=str(item["name"]),
                abbreviation=str(item["abbreviation"]),
                color=tuple(float(c) for c in item["color"]),  # type: ignore[arg-type]
                terminology=Terminology.from_dict(item["terminology"]),
            )
            for item in data["labels"]
        )
        return cls(
            labels=labels,
            regions={k: tuple(int(v) for v in vs) for k, vs in data["regions"].items()},
            paint_order=tuple((p["region"], int(p["value"])) for p in data["paint_order"]),
            region_order=region_order,
        )

    def check(self, task_name: str) -> list[str]:
        """Consistency problems (empty when fine): regions and paint order must agree."""
        problems = []
        values = {label.value for label in self.labels}
        if set(self.regions) != set(self.region_order):
            problems.append(
                f"{task_name}: labelmap regions {sorted(self.regions)} differ from the task's "
                f"regions {sorted(self.region_order)}"
            )
            return problems
        if sorted(r for r, _ in self.paint_order) != sorted(self.region_order):
            problems.append(f"{task_name}: paint_order must name each region once")
        for region, covered in self.regions.items():
            if set(covered) - values:
                problems.append(f"{task_name}: region {region} covers unknown values {covered}")
        # A labelmap value v lies in the regions that cover it; painting those regions' masks
        # must give v back, so the last of them in paint order must paint v.
        painted = dict(self.paint_order)
        for value in sorted(values):
            covering = [r for r, _ in self.paint_order if value in self.regions.get(r, ())]
            if not covering or painted[covering[-1]] != value:
                problems.append(
                    f"{task_name}: painting the regions that cover labelmap value {value} "
                    f"({', '.join(covering) or 'none'}) does not reproduce it"
                )
        return problems


def _check_convention(convention: str) -> str:
    convention = str(convention).lower().removeprefix("brats").strip()
    if convention not in CONVENTIONS:
        raise SegResMambaError(
            f"unknown BraTS labelmap convention {convention!r}; use one of {', '.join(CONVENTIONS)}"
        )
    return convention
