"""The task objects: what a network reads, what it outputs, and what each output means.

They are frozen dataclasses built from ``tasks.json`` so that every face (CLI, Slicer, training)
sees the same labels, colours, SNOMED CT codes and preprocessing, and nothing is written twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ..errors import SegResMambaError
from .matching import canonical_sequence, recognise_sequence

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
"""File name endings stripped before an input's ``name_patterns`` are tried."""


@dataclass(frozen=True)
class Code:
    """One coded concept as DICOM writes it: scheme ("SCT" = SNOMED CT), value and meaning."""

    scheme: str
    value: str
    meaning: str

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}

    def slicer_triplet(self) -> str:
        """``scheme^value^meaning``, the form 3D Slicer uses inside terminology strings."""
        return f"{self.scheme}^{self.value}^{self.meaning}"

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> Code:
        return cls(str(data["scheme"]), str(data["value"]), str(data["meaning"]))


@dataclass(frozen=True)
class Terminology:
    """DICOM segmentation terminology: category, type and optional modifier (e.g. laterality).

    Also readable like a dict (``terminology["type"]``) for code that treats it as one.
    """

    category: Code
    type: Code
    modifier: Code | None = None

    def __getitem__(self, key: str) -> Code | None:
        if key not in ("category", "type", "modifier"):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        value = self[key] if key in ("category", "type", "modifier") else None
        return default if value is None else value

    def to_dict(self) -> dict[str, dict[str, str]]:
        out = {"category": self.category.to_dict(), "type": self.type.to_dict()}
        if self.modifier is not None:
            out["modifier"] = self.modifier.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Terminology:
        modifier = data.get("modifier")
        return cls(
            category=Code.from_dict(data["category"]),
            type=Code.from_dict(data["type"]),
            modifier=Code.from_dict(modifier) if modifier else None,
        )


@dataclass(frozen=True)
class Label:
    """One output of the network: its value (softmax) or region (sigmoid), name, colour, codes.

    For softmax tasks ``value`` is the label value in the labelmap and the output channel; for
    sigmoid tasks (overlapping regions) label number k in the list is output channel k and
    ``value`` (k + 1) just names it. ``color`` is (r, g, b) in 0..1.
    """

    value: int
    name: str
    color: tuple[float, float, float]
    terminology: Terminology
    abbreviation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "name": self.name,
            "color": list(self.color),
            "terminology": self.terminology.to_dict(),
        }
        if self.abbreviation:
            out["abbreviation"] = self.abbreviation
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Label:
        return cls(
            value=int(data["value"]),
            name=str(data["name"]),
            color=tuple(float(c) for c in data["color"]),  # type: ignore[arg-type]
            terminology=Terminology.from_dict(data["terminology"]),
            abbreviation=data.get("abbreviation"),
        )


@dataclass(frozen=True)
class InputSpec:
    """One input image (network channel): its name and how to recognise its file by name.

    An input named after an MRI sequence (FLAIR, T1, T1Gd, T2) is recognised by the one matcher
    :func:`segresmamba.tasks.matching.recognise_sequence` when the file name names a sequence;
    any other name (nnU-Net's ``CASE_0000``), and any other input, by ``name_patterns``,
    regular expressions tried, case-insensitively, on the file name without folder and image
    extension (``BraTS-GLI-00001-000-t1c.nii.gz`` -> ``brats-gli-00001-000-t1c``).
    """

    name: str
    description: str
    name_patterns: tuple[str, ...] = ()

    def matches(self, filename: str | PurePath) -> bool:
        stem = image_stem(filename)
        sequence = canonical_sequence(self.name)
        found = recognise_sequence(stem) if sequence is not None else None
        if found is not None:
            return found == sequence
        # no sequence word in the name (nnU-Net's CASE_0000): the input's own patterns decide
        return any(re.search(p, stem, flags=re.IGNORECASE) for p in self.name_patterns)


def image_stem(filename: str | PurePath) -> str:
    """The file name without folder and image extension, lower case."""
    name = PurePath(filename).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Task:
    """A segmentation task: inputs in network channel order, outputs, preprocessing, network.

    Built by :func:`segresmamba.tasks.get_task`; see ``docs/engine-interfaces.md`` for the fields.
    ``labelmap`` is set only for sigmoid tasks whose regions combine into one labelmap (BraTS).
    """

    name: str
    title: str
    description: str
    modality: str
    inputs: tuple[InputSpec, ...]
    output: str
    labels: tuple[Label, ...]
    spacing_mm: tuple[float, float, float]
    fast_spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    intensity: dict[str, Any]
    network: dict[str, Any]
    labelmap: Any = None  # segresmamba.tasks.labelmap.Labelmap for BraTS, else None
    dataset: str = ""

    def __hash__(self) -> int:  # the dict fields are not hashable; a task is its name
        return hash(self.name)

    @property
    def out_channels(self) -> int:
        """Network output channels: classes incl. background (softmax) or regions (sigmoid)."""
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        """Network input channels, one per input image."""
        return len(self.inputs)

    @property
    def foreground_labels(self) -> tuple[Label, ...]:
        """The labels that are structures (everything except background value 0 of softmax)."""
        if self.output == "softmax":
            return tuple(label for label in self.labels if label.value != 0)
        return self.labels

    def label(self, key: int | str) -> Label:
        """The label with this value, name or abbreviation."""
        for label in self.labels:
            if key in (label.value, label.name, label.abbreviation):
                return label
        names = ", ".join(label.name for label in self.labels)
        raise SegResMambaError(f"task {self.name} has no label {key!r}; its labels are: {names}")

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``SegResMamba(**kwargs)``, channels included."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, **self.network}

    def match_inputs(self, filenames: Iterable[str | PurePath]) -> dict[str, str | PurePath]:
        """Assign files to this task's inputs by their names, e.g. BraTS ``*-t2f`` to FLAIR.

        Returns ``{input name: file}`` in channel order. A task with one input takes one file
        whatever its name. Raises SegResMambaError naming the files that match no input, an
        input that several files match, or an input no file matches.
        """
        files = list(filenames)
        if len(self.inputs) == 1 and len(files) == 1:
            return {self.inputs[0].name: files[0]}
        found: dict[str, list[str | PurePath]] = {spec.name: [] for spec in self.inputs}
        for file in files:
            hits = [spec.name for spec in self.inputs if spec.matches(file)]
            if len(hits) != 1:
                what = "no input" if not hits else "several inputs (" + ", ".join(hits) + ")"
                raise SegResMambaError(
                    f"cannot tell which {self.name} input {PurePath(file).name} is: its name "
                    f"matches {what} of {', '.join(s.name for s in self.inputs)}"
                )
            found[hits[0]].append(file)
        for name, hits in found.items():
            if len(hits) != 1:
                problem = "no file" if not hits else f"{len(hits)} files"
                raise SegResMambaError(
                    f"task {self.name} needs exactly one {name} image, found {problem} "
                    f"among: {', '.join(PurePath(f).name for f in files)}"
                )
        return {name: hits[0] for name, hits in found.items()}

    def to_dict(self) -> dict[str, Any]:
        """The task as JSON-ready data (the shape ``tasks.json`` stores)."""
        out: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "modality": self.modality,
            "inputs": [
                {
                    "name": s.name,
                    "description": s.description,
                    "name_patterns": list(s.name_patterns),
                }
                for s in self.inputs
            ],
            "output": self.output,
            "labels": [label.to_dict() for label in self.labels],
            "spacing_mm": list(self.spacing_mm),
            "fast_spacing_mm": list(self.fast_spacing_mm),
            "patch_size": list(self.patch_size),
            "intensity": dict(self.intensity),
            "network": dict(self.network),
        }
        if self.dataset:
            out["dataset"] = self.dataset
        if self.labelmap is not None:
            out["labelmap"] = self.labelmap.to_dict()
        return out
