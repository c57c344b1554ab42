"""The training loss, with nnU-Net's ``ignore`` label left out of it.

A user who corrected only some slices labels the rest ``ignore`` (``segresmamba.datasets``); those
voxels must teach the network nothing, neither "background" nor anything else. So the loss is
computed on the labelled voxels only: the probabilities and the one-hot truth are both zeroed
under ignored voxels before MONAI's ``DiceLoss``, and the cross-entropy is the mean over the
labelled voxels. Neither the loss nor its gradient then depends on what the network predicts
there (``Testing/test_training_ignore.py`` checks both).

Without an ignore label every voxel counts and the value equals MONAI's ``DiceLoss`` /
``DiceCELoss`` (softmax). Sigmoid (region) tasks take binary cross-entropy per region: MONAI's
``DiceCELoss`` would take a softmax cross-entropy over the region channels, which overlap.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.utils import one_hot
from torch import nn

from segresmamba.tasks import Task

__all__ = ["SegmentationLoss", "labelled_mask", "make_loss"]

LOSSES = ("dice", "dicece")


def labelled_mask(label: torch.Tensor, ignore_value: int | None) -> torch.Tensor | None:
    """(B, 1, ...) True where a voxel is labelled; None when nothing can be ignored.

    Softmax labels hold the ignore value in their one channel; sigmoid (region) labels hold it in
    every region channel (``training.transforms.LoadCased``), so the first channel tells.
    """
    if ignore_value is None:
        return None
    return label[:, :1] != ignore_value


class SegmentationLoss(nn.Module):
    """Dice (+ cross-entropy) of logits against a label batch, ignored voxels left out."""

    def __init__(self, output: str, name: str, ignore_value: int | None = None) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
        self.output = output
        self.with_ce = name == "dicece"
        self.ignore_value = ignore_value
        kwargs: dict[str, Any] = {}
        if output != "softmax":  # BraTS regions, as MONAI's BraTS tutorial
            kwargs = {"smooth_nr": 0.0, "smooth_dr": 1e-5, "squared_pred": True}
        self.dice = DiceLoss(**kwargs)  # on probabilities: the activation is applied here

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        mask = labelled_mask(label, self.ignore_value)
        weight = None if mask is None else mask.to(logits.dtype)
        target = label if mask is None else torch.where(mask, label, 0)  # ignored: background
        if self.output == "softmax":
            truth = one_hot(target, logits.shape[1], dtype=logits.dtype)
            probabilities = torch.softmax(logits, 1)
        else:
            truth = target.to(logits.dtype)
            probabilities = torch.sigmoid(logits)
        if weight is None:
            loss = self.dice(probabilities, truth)
        else:
            loss = self.dice(probabilities * weight, truth * weight)
        if self.with_ce:
            loss = loss + self._cross_entropy(logits, target, weight)
        return loss

    def _cross_entropy(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean cross-entropy over the labelled voxels (softmax) or voxel-regions (sigmoid)."""
        if self.output == "softmax":
            per_voxel = F.cross_entropy(logits, target[:, 0].long(), reduction="none")[:, None]
        else:
            target = target.to(logits.dtype)
            per_voxel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if weight is None:
            return per_voxel.mean()
        weight = weight.expand_as(per_voxel)
        return (per_voxel * weight).sum() / weight.sum().clamp(min=1.0)


def make_loss(task: Task, name: str, ignore_value: int | None = None) -> SegmentationLoss:
    """The loss a task trains with (``name``: "dice" or "dicece", as in the recipe or plan)."""
    return SegmentationLoss(task.output, name, ignore_value)
