"""Which image is which: the one name matcher behind the CLI, the Slicer module and training.

A multi-input task must never feed FLAIR where T1Gd belongs, so recognising an image by its file
name or DICOM series description is done here once, for every face.
"""

from __future__ import annotations

import re

__all__ = ["name_patterns_for"]


def name_patterns_for(channel_name: str) -> tuple[str, ...]:
    """Name patterns (regular expressions on lower-case stems) for an input called ``channel_name``.

    Used for tasks built from a user's dataset, whose inputs are named by ``dataset.json``'s
    ``channel_names``: the image is recognised when its name contains the channel name as a word.
    """
    word = re.escape(channel_name.strip().lower())
    return (rf"(?<![a-z0-9]){word}(?![a-z0-9])",)
