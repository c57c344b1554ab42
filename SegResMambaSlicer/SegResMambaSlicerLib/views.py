"""Show a result in Slicer's views: the segmentation over its volume, its statistics table.

The application's side of the logic's ``showResult`` and ``showStatistics``, kept out of the
module file. Needs the Slicer application (``slicer.app``); without a layout manager (tests,
scripts without views) only the nodes are made.
"""

from __future__ import annotations

import logging

__all__ = ["show_result", "show_statistics"]


def show_statistics(node, reference, task) -> list:
    """Show the result's statistics table (the command line's ``--statistics`` columns,
    measured by Segment Statistics) beside the views; returns its rows, or [] with a warning
    when they cannot be computed."""
    import slicer

    from .statistics import result_statistics, segment_statistics_logic, statistics_table_node

    try:
        logic = segment_statistics_logic()  # Slicer's own measures where the module is loaded
        rows = result_statistics(slicer.mrmlScene, node, reference, task, logic=logic)
    except Exception as error:  # statistics must never cost the user the segmentation
        logging.warning(f"SegResMamba: no statistics for {node.GetName()}: {error}")
        return []
    source = "engine" if logic is None else "Segment Statistics"
    name = f"{node.GetName()} statistics"
    table = statistics_table_node(slicer.mrmlScene, rows, name, source=source)
    layout_manager = slicer.app.layoutManager()
    if layout_manager:
        layout_manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
    return rows


def show_result(node, reference) -> None:
    """Show the segmentation over its input in the slice views and as surfaces in 3D."""
    import slicer

    slicer.util.setSliceViewerLayers(background=reference, fit=True)
    node.CreateClosedSurfaceRepresentation()
    layout_manager = slicer.app.layoutManager()
    if layout_manager and layout_manager.threeDWidget(0):
        layout_manager.threeDWidget(0).threeDView().resetFocalPoint()
