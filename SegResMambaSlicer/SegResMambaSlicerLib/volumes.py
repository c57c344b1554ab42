"""Volume nodes <-> SimpleITK images, with the geometry exactly as Slicer shows it.

Slicer keeps a volume's geometry in its IJK-to-RAS matrix (the image data itself has origin 0,
spacing 1) and may place it under a parent transform; ITK and the engine use an LPS origin,
spacing and direction. Getting this wrong is how a segmentation ends up mirrored or shifted on
oblique or flipped scans (a common complaint about the peers), so every conversion goes through
:func:`ijk_to_world` and the engine's :mod:`segresmamba.io.affine`, and the tests check them on oblique,
flipped and transformed volumes.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

__all__ = [
    "NOT_NETWORK_INPUTS",
    "array_from_volume",
    "fill_empty_inputs",
    "ijk_to_world",
    "image_to_volume_node",
    "is_network_input",
    "network_input_volumes",
    "oriented_image",
    "volume_to_image",
    "vtk_matrix",
]

"""Flips x and y: LPS (ITK, DICOM) <-> RAS (Slicer); its own inverse."""


NOT_NETWORK_INPUTS = (
    "vtkMRMLLabelMapVolumeNode",
    "vtkMRMLTensorVolumeNode",
    "vtkMRMLDiffusionWeightedVolumeNode",
)
"""Subclasses of vtkMRMLScalarVolumeNode that the network cannot read: labelmaps, DWI series and
everything derived from the tensor volume (vector/RGB, streaming, diffusion image, DTI)."""


def is_network_input(node) -> bool:
    """Whether ``node`` is a plain scalar volume (one intensity per voxel) the network can read."""
    return bool(node.IsA("vtkMRMLScalarVolumeNode")) and not any(
        node.IsA(name) for name in NOT_NETWORK_INPUTS
    )


def network_input_volumes(scene) -> list:
    """The scene's volumes that can be network inputs, in the order they were added.

    ``GetNodesByClass`` returns a new collection that the caller owns; Python's wrapper holds
    a second reference, so without ``UnRegister`` the collection, and every volume in it, would
    never be freed (the panel calls this on each NodeAddedEvent)."""
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    nodes.UnRegister(None)
    found = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    return [node for node in found if is_network_input(node)]


def fill_empty_inputs(parameters, task, scene) -> None:
    """Fill the panel's empty input selectors (``inputVolume0``...) from the scene's volumes,
    matched to the task's inputs by name (BraTS: t1c -> T1Gd ...)."""
    from .tasks import match_volumes

    volumes = network_input_volumes(scene)  # no labelmap, RGB, tensor or DWI
    matched = match_volumes(task, [node.GetName() for node in volumes])
    for index, spec in enumerate(task.inputs):
        name = f"inputVolume{index}"
        if getattr(parameters, name) is None and spec.name in matched:
            setattr(parameters, name, volumes[matched[spec.name]])


def _to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    """A vtkMatrix4x4 holding a 4x4 numpy matrix."""
    result = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            result.SetElement(r, c, float(matrix[r, c]))
    return result


def ijk_to_world(node) -> np.ndarray:
    """The 4x4 voxel-index -> world RAS matrix, parent transforms included.

    A linear parent transform is folded in, so the engine sees the volume where Slicer shows it.
    A non-linear one cannot be expressed on a voxel grid: ValueError asks to harden it.
    """
    local = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(local)
    matrix = _to_numpy(local)
    parent = node.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise ValueError(
                f"volume {node.GetName()!r} is under a non-linear transform; harden it "
                "(Transforms module) before segmenting"
            )
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        matrix = _to_numpy(to_world) @ matrix
    return matrix


def array_from_volume(node, copy: bool = True) -> np.ndarray:
    """The node's voxels as a (k, j, i) array (slices first, as SimpleITK orders): a copy, or
    with ``copy=False`` a read-only view for a quick look that must not outlive the node."""
    image_data = node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise ValueError(f"volume {node.GetName()!r} holds no image data")
    components = image_data.GetNumberOfScalarComponents()
    if components != 1:
        raise ValueError(
            f"volume {node.GetName()!r} has {components} components per voxel (colour or "
            "vector image); choose a scalar volume"
        )
    dims = image_data.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    array = scalars.reshape(dims[::-1])
    if copy:
        return array.copy()
    array.flags.writeable = False
    return array


def volume_to_image(node) -> sitk.Image:
    """The volume as a SimpleITK image with its world geometry (parent transform included)."""
    from segresmamba.io.affine import set_grid

    return set_grid(sitk.GetImageFromArray(array_from_volume(node)), ijk_to_world(node))


def image_to_volume_node(scene, image: sitk.Image, name: str, labelmap: bool = False):
    """A new scalar (or labelmap) volume node in ``scene`` holding ``image`` with its geometry."""
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, name)
    array = sitk.GetArrayFromImage(image)
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(*array.shape[::-1])
    vtk_type = numpy_support.get_vtk_array_type(array.dtype)
    image_data.AllocateScalars(vtk_type, 1)
    target = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    target[:] = array.ravel()
    node.SetAndObserveImageData(image_data)
    from segresmamba.io.affine import itk_affine_ras

    node.SetIJKToRASMatrix(vtk_matrix(itk_affine_ras(image)))
    node.CreateDefaultDisplayNodes()
    return node


def oriented_image(array: np.ndarray, ijk_to_ras: np.ndarray):
    """A vtkOrientedImageData (segmentations' voxel container) holding ``array`` (k, j, i) as
    unsigned char on the grid of ``ijk_to_ras``."""
    import slicer

    data = np.ascontiguousarray(array, dtype=np.uint8)
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*data.shape[::-1])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = data.ravel()
    image.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras))
    image.Modified()
    return image
