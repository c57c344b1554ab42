"""Training, evaluation and efficiency tools for SegResMamba, on top of the ``segresmamba`` engine.

Run from the repository root as ``python -m training.<command>``:

- ``prepare``: a MONAI datalist (fixed, documented splits) from a BTCV, BraTS 2021 or MSD spleen
  download, with header checks of every image/label pair;
- ``train``: the paper's recipe per task (Appendix A), with sliding-window validation, exact
  resume, CSV/TensorBoard logs and ``torchrun`` support; ``--task phantom`` trains the demo model;
- ``evaluate``: per-class Dice and HD95 through the engine's own ``segment()``, laid out as the
  paper's Tables 1-3;
- ``efficiency``, ``co2``, ``plot``: Tables 5-7 and Figure 2.

Everything about a task (inputs, labels, spacing, patch, intensity, network) comes from the
engine's task registry, so training and inference cannot drift apart. See ``training/README.md``.
"""
