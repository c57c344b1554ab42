"""Qt-free logic of the SegResMambaSlicer module, behind small interfaces.

- :mod:`.process`: run the engine's command in a child process, poll it, cancel it (stdlib only).
- :mod:`.dependencies`: what the engine needs, what is missing, how to install it (stdlib only).
- :mod:`.tasks`: task names, input matching by volume name, the model line (engine registries).
- :mod:`.volumes`, :mod:`.segmentation`, :mod:`.logic`: volume nodes <-> images with exact
  geometry, results -> segmentation nodes, and ``segment_volumes`` / ``SegmentationJob`` (MRML).
- :mod:`.selftest`: the phantom check shared by the Slicer self-test and pytest.
- :mod:`.headless`: a real MRML scene with Slicer's logics outside Slicer (slicer-core).

Nothing is imported here, so ``import SegResMambaSlicerLib.process`` works with neither Slicer,
slicer-core nor PyTorch installed.
"""
