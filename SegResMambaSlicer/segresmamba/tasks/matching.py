"""Which image is which: the one name matcher behind the CLI, the Slicer module and training.

A multi-input task must never feed FLAIR where T1Gd belongs, so recognising an MRI sequence by
its file name or DICOM series description is done here once, for every face. Names are split
into words (``BraTS19_2013_2_1_t1ce`` -> brats19, 2013, 2, 1, t1ce; ``AX T1 MPRAGE+C`` -> ax,
t1, mprage, +c) and the words decide, with these precedences:

- a T1 word with a contrast word is T1Gd, unless a "pre"/"native" word says otherwise
  ("T1 pre gd" is T1; "T1 POST GD FLAIR" is T1Gd: the T1 word outranks FLAIR);
- otherwise a FLAIR word is FLAIR (``t2_flair`` is FLAIR, not T2);
- otherwise a T2 word is T2;
- otherwise a contrast word alone is T1Gd and "pre"/"native" alone is T1.
"""

from __future__ import annotations

import re

__all__ = ["SEQUENCE_SYNONYMS", "canonical_sequence", "name_patterns_for", "recognise_sequence"]

SEQUENCE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "FLAIR": ("fla", "flair", "t2f", "t2flair", "t2_flair", "tirm", "fluid"),
    "T1Gd": (
        "t1c", "t1ce", "t1gd", "t1post", "t1wce", "+c", "+gd", "post", "gad", "gd",
        "contrast", "ce", "km", "mprage+c",
    ),
    "T1": ("t1", "t1n", "t1w", "mprage", "pre", "native", "nativ"),
    "T2": ("t2", "t2w", "fse"),
}  # fmt: skip
"""The spellings of each BraTS sequence in file names and DICOM series descriptions, one word
each (``t2_flair`` and ``mprage+c`` are the two-word spellings, matched as their words)."""

_T1_WORDS = frozenset(("t1", "t1n", "t1w", "mprage"))
_T1_CONTRAST_WORDS = frozenset(("t1c", "t1ce", "t1gd", "t1post", "t1wce"))
_CONTRAST_WORDS = frozenset(("+c", "+gd", "+contrast", "post", "gad", "gd", "contrast", "ce", "km"))
_PRE_WORDS = frozenset(("pre", "native", "nativ", "t1n"))
_FLAIR_WORDS = frozenset(("fla", "flair", "t2f", "t2flair", "tirm", "fluid"))
_T2_WORDS = frozenset(("t2", "t2w", "fse"))

_ALIASES = {
    "flair": "FLAIR",
    "t2f": "FLAIR",
    "t2flair": "FLAIR",
    "t1gd": "T1Gd",
    "t1c": "T1Gd",
    "t1ce": "T1Gd",
    "t1": "T1",
    "t1n": "T1",
    "t1w": "T1",
    "t2": "T2",
    "t2w": "T2",
}
_WORD = re.compile(r"\+?[a-z0-9]+")


def canonical_sequence(name: str) -> str | None:
    """``"FLAIR"``, ``"T1"``, ``"T1Gd"`` or ``"T2"`` when ``name`` (an input or channel name such
    as "t1ce" or "FLAIR") is one of these sequences, else None (e.g. "CT", "ADC")."""
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.strip().lower()))


def words(text: str) -> list[str]:
    """The lower-case words of a name; ``+`` stays on the word it starts (``mprage+c``)."""
    return _WORD.findall(text.lower())


def recognise_sequence(name: str) -> str | None:
    """The sequence ("FLAIR", "T1", "T1Gd", "T2") a file name or series description names, or
    None when its words identify none (then the caller must ask, never guess)."""
    found = set(words(name))
    pre = bool(found & _PRE_WORDS)
    contrast = bool(found & (_CONTRAST_WORDS | _T1_CONTRAST_WORDS)) and not pre
    if found & _T1_CONTRAST_WORDS and not pre:
        return "T1Gd"
    if found & _T1_WORDS:
        return "T1Gd" if contrast else "T1"
    if found & _FLAIR_WORDS:
        return "FLAIR"
    if found & _T2_WORDS:
        return "T2"
    if contrast:
        return "T1Gd"
    if pre:
        return "T1"
    return None


def name_patterns_for(channel_name: str) -> tuple[str, ...]:
    """Name patterns (regular expressions on lower-case stems) for an input called ``channel_name``.

    Used for tasks built from a user's dataset, whose inputs are named by ``dataset.json``'s
    ``channel_names``: the image is recognised when its name contains the channel name as a word,
    or, for a known MRI sequence ("FLAIR", "T1Gd", ...), any of its spellings in
    :data:`SEQUENCE_SYNONYMS` (such inputs are then matched by :func:`recognise_sequence`, which
    also settles names like "T1 POST GD FLAIR" that several spellings hit).
    """
    spellings = [channel_name.strip().lower()]
    sequence = canonical_sequence(channel_name)
    if sequence is not None:
        spellings += [s for s in SEQUENCE_SYNONYMS[sequence] if s not in spellings]
    alternatives = "|".join(re.escape(s).replace("_", "[-_ ]?") for s in spellings)
    return (rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])",)
