"""Cleaning and tokenising one text. Pure functions: the same input always gives the same output."""

import re

from pipeline.config import CleanParams

# Raised whenever a rule below changes: a checkpoint saves it, and one trained on texts cleaned
# by other rules is refused rather than fed inputs it never saw.
CLEANING_RULES = 1

_LINK = re.compile(r"(?:https?://|ftp://|www\.)\S*", re.IGNORECASE)
# Math delimiters \( \) \[ \] and $ carry no meaning once the math is inline text.
_LATEX_DELIMITER = re.compile(r"\\[()\[\]]|\$")
# Layout commands say how to typeset, not what is written: drop them with their name.
_LATEX_LAYOUT = re.compile(
    r"\\(?:left|right|big|Big|bigg|Bigg|displaystyle|textstyle|mathrm|mathbf|mathit|mathsf"
    r"|mathcal|mathbb|text|textbf|textit|operatorname|quad|qquad|limits|nolimits)(?![a-zA-Z])"
)
# Other commands name a symbol or an operation (\frac, \sqrt, \alpha, \int): keep the name
# as a word, since it is a strong hint of the subject.
_LATEX_COMMAND = re.compile(r"\\([a-zA-Z]+)")
_LATEX_SPACING = re.compile(r"\\[,;:!> ]")
_NON_WORD = re.compile(r"[\W_]+")


def clean_text(text: str, params: CleanParams) -> str:
    """Return `text` cleaned as `params` says, with runs of whitespace collapsed to one space."""
    if params.remove_links:
        text = _LINK.sub(" ", text)
    if params.remove_latex:
        text = _LATEX_SPACING.sub(" ", text)
        text = _LATEX_DELIMITER.sub(" ", text)
        text = _LATEX_LAYOUT.sub(" ", text)
        text = _LATEX_COMMAND.sub(r" \1 ", text)
        # A backslash left now starts no command (an escape like \% or the line break \\).
        text = text.replace("\\", " ")
    if params.lowercase:
        text = text.lower()
    if params.remove_punctuation:
        text = _NON_WORD.sub(" ", text)
    return " ".join(text.split())


def tokenize(text: str) -> list[str]:
    """Split a cleaned text into word tokens."""
    return text.split()
