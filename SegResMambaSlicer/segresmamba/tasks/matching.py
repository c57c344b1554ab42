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

__all__ = [
    "CONTRAST_WORDS",
    "PRE_CONTRAST_WORDS",
    "SEQUENCE_SYNONYMS",
    "SEQUENCE_WORDS",
    "canonical_sequence",
    "name_patterns_for",
    "recognise_sequence",
]

SEQUENCE_WORDS: dict[str, tuple[str, ...]] = {
    "FLAIR": ("fla", "flair", "t2f", "t2flair", "tirm", "fluid"),
    "T1Gd": ("t1c", "t1ce", "t1gd", "t1post", "t1wce"),
    "T1": ("t1", "t1n", "t1w", "mprage"),
    "T2": ("t2", "t2w", "fse"),
}  # fmt: skip
"""Words that name a sequence by themselves (``t2_flair`` is the words t2 and flair)."""

CONTRAST_WORDS = ("+c", "+gd", "+contrast", "post", "gad", "gd", "contrast", "ce", "km")
"""Words that mark a post-contrast image: with a T1 word, or alone, they make it T1Gd."""

PRE_CONTRAST_WORDS = ("pre", "native", "nativ")
"""Words that mark a pre-contrast image: they outrank contrast words ("T1 pre gd" is T1)."""

SEQUENCE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "FLAIR": (*SEQUENCE_WORDS["FLAIR"], "t2_flair"),
    "T1Gd": (*SEQUENCE_WORDS["T1Gd"], *CONTRAST_WORDS, "mprage+c"),
    "T1": (*SEQUENCE_WORDS["T1"], *PRE_CONTRAST_WORDS),
    "T2": SEQUENCE_WORDS["T2"],
}
"""Every spelling of each BraTS sequence in file names and DICOM series descriptions."""

_WORD = re.compile(r"\+?[a-z0-9]+")


def canonical_sequence(name: str) -> str | None:
    """``"FLAIR"``, ``"T1"``, ``"T1Gd"`` or ``"T2"`` when ``name`` (an input or channel name such
    as "t1ce" or "FLAIR") is one of these sequences, else None (e.g. "CT", "ADC")."""
    word = re.sub(r"[^a-z0-9]", "", name.strip().lower())
    return next((seq for seq, words in SEQUENCE_WORDS.items() if word in words), None)


def words(text: str) -> list[str]:
    """The lower-case words of a name; ``+`` stays on the word it starts (``mprage+c``)."""
    return _WORD.findall(text.lower())


def recognise_sequence(name: str) -> str | None:
    """The sequence ("FLAIR", "T1", "T1Gd", "T2") a file name or series description names, or
    None when its words identify none (then the caller must ask, never guess)."""
    found = set(words(name))
    pre = bool(found & {*PRE_CONTRAST_WORDS, "t1n"})
    contrast = bool(found & {*CONTRAST_WORDS, *SEQUENCE_WORDS["T1Gd"]}) and not pre
    named = {seq for seq, spellings in SEQUENCE_WORDS.items() if found & set(spellings)}
    if named & {"T1", "T1Gd"}:  # a T1 word outranks FLAIR: "T1 POST GD FLAIR" is T1Gd
        return "T1Gd" if contrast else "T1"
    for sequence in ("FLAIR", "T2"):  # FLAIR outranks T2: "t2_flair" is FLAIR
        if sequence in named:
            return sequence
    if contrast:
        return "T1Gd"
    return "T1" if pre else None


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
