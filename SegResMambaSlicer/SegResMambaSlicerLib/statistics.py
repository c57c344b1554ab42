"""The statistics table of a result in Slicer: the columns ``segresmamba segment --statistics``
writes, as a table node the user sees after a run and can save as CSV or JSON.

The segments go through Slicer's own exporter onto the input volume's grid, then through the
engine's :func:`segresmamba.statistics.segment_statistics`. Inside the Slicer application, where
the Segment Statistics module is loaded, its logic then measures the voxel count, volume, mean,
standard deviation and 5th/95th percentiles, so the numbers are the ones a Slicer user gets from
that module (its percentiles come from a histogram, so they can differ from the command line's
by a bin). Only the bounding box in patient millimetres, which that module does not measure, stays
the engine's. slicer-core has no Segment Statistics module; there the whole table is the engine's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import SimpleITK as sitk

from .segmentation import segmentation_to_labels
from .volumes import volume_to_image

__all__ = [
    "COLUMNS",
    "SLICER_MEASURES",
    "measurements_by_segment",
    "merge_slicer_measurements",
    "result_statistics",
    "save_statistics",
    "segment_statistics_logic",
    "slicer_measurements",
    "statistics_table_node",
]

SCALAR_PLUGIN = "ScalarVolumeSegmentStatisticsPlugin"
# our row field -> the Scalar Volume plugin's measurement key (Slicer 5.8 and later)
SLICER_MEASURES = {
    "voxel_count": "voxel_count",
    "volume_ml": "volume_cm3",
    "mean": "mean",
    "std": "stdev",
    "p5": "percentile_05",
    "p95": "percentile_95",
}
SOURCE_ATTRIBUTE = "SegResMamba.StatisticsSource"

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


def segment_statistics_logic():
    """Slicer's ``SegmentStatisticsLogic`` when its module is loaded and measures percentiles,
    else None (slicer-core, or a Slicer without the module)."""
    try:
        from SegmentStatistics import SegmentStatisticsLogic
    except ImportError:
        return None
    logic = SegmentStatisticsLogic()
    plugins = {plugin.__class__.__name__: plugin for plugin in logic.plugins}
    scalar = plugins.get(SCALAR_PLUGIN)
    if scalar is None or not set(SLICER_MEASURES.values()) <= set(scalar.keys):
        return None
    return logic


def slicer_measurements(logic, segmentation_node, volume_node) -> dict:
    """``{segment name: {row field: value}}`` from Segment Statistics' Scalar Volume plugin.

    A private parameter node keeps the user's own Segment Statistics settings untouched; every
    segment counts, shown or hidden.
    """
    parameters = logic.createParameterNode()
    logic.setParameterNode(parameters)
    parameters.SetParameter("Segmentation", segmentation_node.GetID())
    parameters.SetParameter("ScalarVolume", volume_node.GetID())
    parameters.SetParameter("visibleSegmentsOnly", "False")
    for plugin in logic.plugins:
        name = plugin.__class__.__name__
        parameters.SetParameter(f"{name}.enabled", str(name == SCALAR_PLUGIN))
        for key in plugin.keys:
            wanted = name == SCALAR_PLUGIN and key in SLICER_MEASURES.values()
            parameters.SetParameter(f"{name}.{key}.enabled", str(wanted))
    logic.computeStatistics()
    return measurements_by_segment(logic.getStatistics())


def measurements_by_segment(statistics: dict) -> dict:
    """Re-key Segment Statistics' result (``{(segment ID, "Plugin.key"): value}``, with
    ``"SegmentIDs"`` and the ``"Segment"`` name column) by segment name and row field."""
    measured = {}
    for segment_id in statistics["SegmentIDs"]:
        values = {}
        for field, key in SLICER_MEASURES.items():
            value = statistics.get((segment_id, f"{SCALAR_PLUGIN}.{key}"))
            if value is not None:
                values[field] = value
        measured[statistics[segment_id, "Segment"]] = values
    return measured


def merge_slicer_measurements(rows: list, measured: dict) -> list:
    """The engine's rows with Segment Statistics' values in place of the engine's own; the
    bounding box stays. A segment Slicer counts differently from the engine is logged, since
    both measure the same labels on the same grid."""
    merged = []
    for row in rows:
        values = measured.get(row.segment)
        if not values:
            merged.append(row)
            continue
        count = int(values.get("voxel_count", row.voxel_count))
        if count != row.voxel_count:
            logging.warning(
                f"SegResMamba: Segment Statistics counts {count} voxels in {row.segment}, "
                f"the engine {row.voxel_count}"
            )
        changes = {"voxel_count": count}
        for field in SLICER_MEASURES:
            if field != "voxel_count" and field in values and count:
                changes[field] = round(float(values[field]), 4)
        merged.append(dataclasses.replace(row, **changes))
    return merged


def result_statistics(scene, segmentation_node, volume_node, task, logic=None) -> list:
    """Per-segment statistics of ``segmentation_node`` over ``volume_node``: the engine's rows,
    measured by Segment Statistics' ``logic`` when one is given (see
    :func:`segment_statistics_logic`)."""
    from segresmamba.io import segments_for
    from segresmamba.statistics import segment_statistics
    from segresmamba.tasks import get_task

    task = get_task(task)
    labels = segmentation_to_labels(scene, segmentation_node, task, volume_node)
    intensity = volume_to_image(volume_node)
    labelmap = sitk.GetImageFromArray(labels, isVector=labels.ndim == 4)
    labelmap.CopyInformation(intensity)
    segments = segments_for(task, labelmap)
    rows = segment_statistics(volume_node.GetName(), labelmap, intensity, segments)
    if logic is None:
        return rows
    return merge_slicer_measurements(
        rows, slicer_measurements(logic, segmentation_node, volume_node)
    )


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def statistics_table_node(scene, rows, name: str, table_node=None, source: str = "engine"):
    """A ``vtkMRMLTableNode`` (new, or ``table_node`` refilled) with one row per segment;
    ``source`` ("engine" or "Segment Statistics") is kept as a node attribute."""
    import vtk

    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table_node.SetAttribute(SOURCE_ATTRIBUTE, source)
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
