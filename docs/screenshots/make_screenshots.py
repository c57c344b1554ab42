"""Make the README and Extensions Catalog screenshots without the Slicer application.

It runs the module's own logic on real MRML (slicer-core): the demo phantom CT becomes a volume
node, ``segment_volumes`` segments it with the bundled demo model (or ``--model``), and the
resulting segmentation node's exports are rendered offscreen with VTK (EGL or OSMesa, no
display needed):

- ``slice-view.png``: an axial slice with the segments overlaid as Slicer shows them (filled at
  half opacity with a solid outline), from Slicer's own labelmap export on the CT's grid;
- ``3d-view.png``: the segments' closed-surface representation, as in Slicer's 3D view.

Run from the repository root: ``.venv/bin/python docs/screenshots/make_screenshots.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

OUT = Path(__file__).resolve().parent
SIZE = (720, 540)
BACKGROUND = (0.10, 0.12, 0.16)


def segment_phantom(model: str | None):
    """The phantom CT and its segmentation, made by the module's logic in a headless scene."""
    from segresmamba.demo import demo_checkpoint
    from segresmamba.phantom import DEMO_SEED, make_phantom
    from segresmamba.tasks import get_task
    from SegResMambaSlicerLib.headless import HeadlessSlicer
    from SegResMambaSlicerLib.logic import segment_volumes
    from SegResMambaSlicerLib.segmentation import segmentation_to_labels
    from SegResMambaSlicerLib.volumes import array_from_volume, image_to_volume_node

    task = get_task("phantom")
    headless = HeadlessSlicer.create()
    ct, _truth = make_phantom(DEMO_SEED)
    volume = image_to_volume_node(headless.scene, ct, "phantom CT")
    node = segment_volumes(
        headless.scene, task, [volume], model=model or demo_checkpoint(), device="cpu"
    )
    labels = segmentation_to_labels(headless.scene, node, task, volume)
    return task, array_from_volume(volume), labels, node


def render(renderer: vtk.vtkRenderer, path: Path) -> Path:
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*SIZE)
    window.SetMultiSamples(8)
    window.AddRenderer(renderer)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    window.Finalize()
    return path


def caption(renderer: vtk.vtkRenderer, text: str) -> None:
    actor = vtk.vtkTextActor()
    actor.SetInput(text)
    actor.GetTextProperty().SetFontSize(18)
    actor.GetTextProperty().SetColor(0.92, 0.92, 0.92)
    actor.SetDisplayPosition(12, 12)
    renderer.AddViewProp(actor)


def slice_view(task, ct: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """The axial slice with the most foreground, CT window -160..240 HU, segments overlaid."""
    k = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    gray = np.clip((ct[k].astype(float) + 160.0) / 400.0, 0.0, 1.0)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for label in task.foreground_labels:
        mask = labels[k] == label.value
        colour = np.array(label.color)
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * colour
        edge = mask & ~_eroded(mask)
        rgb[edge] = colour
    rgb = (255 * rgb).astype(np.uint8)[::-1]  # image row 0 at the bottom, as VTK draws
    image = vtk.vtkImageData()
    image.SetDimensions(rgb.shape[1], rgb.shape[0], 1)
    image.GetPointData().SetScalars(
        numpy_support.numpy_to_vtk(rgb.reshape(-1, 3).copy(), deep=True)
    )
    actor = vtk.vtkImageActor()
    actor.GetMapper().SetInputData(image)
    actor.InterpolateOff()
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(*BACKGROUND)
    renderer.AddActor(actor)
    caption(renderer, f"SegResMamba: {task.title}, axial slice {k}")
    renderer.ResetCamera()
    renderer.GetActiveCamera().ParallelProjectionOn()
    renderer.GetActiveCamera().SetParallelScale(0.5 * rgb.shape[0] * 1.08)
    return render(renderer, path)


def _eroded(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def three_d_view(task, node, path: Path) -> Path:
    """The closed surfaces, seen from the front (anterior), head up, as Slicer's 3D view."""
    import slicer

    renderer = vtk.vtkRenderer()
    renderer.SetBackground(*BACKGROUND)
    surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    segmentation = node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        mesh = segment.GetRepresentation(surface)
        if mesh is None or mesh.GetNumberOfPoints() == 0:
            continue
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputData(mesh)
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputConnection(normals.GetOutputPort())
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*segment.GetColor())
        actor.GetProperty().SetSpecular(0.3)
        renderer.AddActor(actor)
    caption(renderer, f"SegResMamba: {task.title}, closed surfaces")
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    center = np.array(camera.GetFocalPoint())
    distance = camera.GetDistance()
    camera.SetPosition(*(center + np.array([0.35, 1.0, 0.25]) * distance * 0.95))
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCameraClippingRange()
    return render(renderer, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: the bundled demo model)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNG files")
    args = parser.parse_args(argv)
    task, ct, labels, node = segment_phantom(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    print(slice_view(task, ct, labels, args.out / "slice-view.png"))
    print(three_d_view(task, node, args.out / "3d-view.png"))


if __name__ == "__main__":
    main()
