"""The statistics table of a result in Slicer: the very numbers ``segresmamba segment
--statistics`` writes, as a table node the user sees after a run and can save as CSV or JSON.

The segments go through Slicer's own exporter onto the input volume's grid (as the tests' voxel
comparisons do), then through the engine's :func:`segresmamba.statistics.segment_statistics`, so
Slicer and the command line never disagree (the 5th/95th percentiles and the bounding box in
patient millimetres are not among Slicer's Segment Statistics measures, and that module is not
part of slicer-core).
"""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from .segmentation import segmentation_to_labels
from .volumes import volume_to_image

__all__ = ["COLUMNS", "result_statistics", "save_statistics", "statistics_table_node"]

COLUMNS = (
    ("segment", "Segment"),
    ("voxel_count", "Voxel count"),
    ("volume_ml", "Volume [mL]"),
    ("mean", "Mean"),
    ("std", "Standard deviation"),
    ("p5", "5th percentile"),
    ("p95", "95th percentile"),
    ("bbox_min_mm", "Bounding box min LPS [mm]"),
    ("bbox_max_mm", "Bounding box max LPS [mm]"),
)


def result_statistics(scene, segmentation_node, volume_node, task) -> list:
    """Per-segment statistics (the engine's rows) of ``segmentation_node`` over ``volume_node``."""
    from segresmamba.io import segments_for
    from segresmamba.statistics import segment_statistics
    from segresmamba.tasks import get_task

    task = get_task(task)
    labels = segmentation_to_labels(scene, segmentation_node, task, volume_node)
    intensity = volume_to_image(volume_node)
    labelmap = sitk.GetImageFromArray(labels, isVector=labels.ndim == 4)
    labelmap.CopyInformation(intensity)
    segments = segments_for(task, labelmap)
    return segment_statistics(volume_node.GetName(), labelmap, intensity, segments)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def statistics_table_node(scene, rows, name: str, table_node=None):
    """A ``vtkMRMLTableNode`` (new, or ``table_node`` refilled) with one row per segment."""
    import vtk

    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = table_node.GetTable()
    table.Initialize()
    for field, title in COLUMNS:
        column = vtk.vtkStringArray()
        column.SetName(title)
        column.SetNumberOfValues(len(rows))
        for index, row in enumerate(rows):
            column.SetValue(index, _cell(getattr(row, field)))
        table.AddColumn(column)
    table_node.Modified()
    return table_node


def save_statistics(rows, path: str | os.PathLike) -> Path:
    """Save the table as the command line does (``.csv`` or ``.json``), atomically."""
    from segresmamba.statistics import write_statistics

    return write_statistics(rows, path)
