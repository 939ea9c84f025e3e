"""CheckList-style behaviour checks that need no labels: label-preserving perturbations of the
raw texts (the share of predictions that change) and a directional check (appending a word
typical of a label must not lower that label's score). Any classifier that turns cleaned texts
into one score per label (probabilities, or decision scores) can be checked; the perturbed texts
go through the same cleaning as the rows the classifier was trained on, as predict's do."""

import re
from collections import Counter
from collections.abc import Callable

import numpy as np

from pipeline.errors import PipelineError
from pipeline.text import tokenize

# Fixed, and apart from every seed in params.yaml: every model and every run is checked on the
# same perturbed texts. Row i of perturbation k draws from its own generator (SEED, k, i).
SEED = 0
LONG_WORD = 6  # letters: a word this long gets one typo
# At most this many rows are checked (drawn with SEED, the same for every model): each check
# scores every row again, and 400 rows put a share's standard error under 0.025.
MAX_ROWS = 400
PREFIX = "Q1. "
# Directional check: a typical word occurs in at least this many training rows (fewer when no
# word of a label does), and a score that falls by more than this counts as lowered.
MIN_ROWS = 5
TOLERANCE = 1e-4

Scorer = Callable[[list[str]], np.ndarray]  # cleaned texts -> (rows, labels) scores
Cleaner = Callable[[str], str]

_WORD = re.compile(r"[^\W\d_]+")  # a run of letters
_NUMBER = re.compile(r"\d+")


def _typo(text: str, rng: np.random.Generator) -> str:
    """Swap two neighbouring letters inside each word of LONG_WORD or more letters (first and
    last letters kept, as a reader skims them)."""

    def swap(match: re.Match[str]) -> str:
        word = match.group()
        if len(word) < LONG_WORD:
            return word
        i = int(rng.integers(1, len(word) - 2))
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]

    return _WORD.sub(swap, text)


def _numbers(text: str, rng: np.random.Generator) -> str:
    """Every number replaced by another of as many digits (a question's values, not its
    subject)."""

    def change(match: re.Match[str]) -> str:
        digits = len(match.group())
        low = 10 ** (digits - 1) if digits > 1 else 0
        other = match.group()
        while other == match.group():
            other = str(int(rng.integers(low, 10**digits)))
        return other

    return _NUMBER.sub(change, text)


def _spacing(text: str, rng: np.random.Generator) -> str:
    """Two spaces between words and punctuation a hurried writer adds at the end."""
    return "  ".join(text.split()) + " " + "?!."[int(rng.integers(0, 3))] * 2


PERTURBATIONS: dict[str, Callable[[str, np.random.Generator], str]] = {
    "upper_case": lambda text, rng: text.upper(),
    "spacing_punctuation": _spacing,
    "typo": _typo,
    "numbers": _numbers,
    "prefix": lambda text, rng: PREFIX + text,
}


def perturb(texts: list[str], name: str) -> list[str]:
    """Each raw text under perturbation `name`; the same texts give the same result every run."""
    change, k = PERTURBATIONS[name], list(PERTURBATIONS).index(name)
    return [change(text, np.random.default_rng((SEED, k, i))) for i, text in enumerate(texts)]


def checked_rows(rows: int) -> np.ndarray:
    """The indices of the rows checked, in order: all of them up to MAX_ROWS, else MAX_ROWS
    drawn without replacement."""
    if rows <= MAX_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(SEED).choice(rows, MAX_ROWS, replace=False))


def typical_words(texts: list[str], labels: list[str], names: list[str]) -> dict[str, str]:
    """For each label in `names`, the cleaned training word most particular to it: the highest
    share of its rows labelled so, among words in at least MIN_ROWS rows (all words, for a label
    that has none that common); ties go to the more frequent word, then alphabetically."""
    rows_with: Counter[str] = Counter()
    rows_with_label: Counter[tuple[str, str]] = Counter()
    for text, label in zip(texts, labels, strict=True):
        for word in set(tokenize(text)):
            rows_with[word] += 1
            rows_with_label[word, label] += 1
    words = {}
    for name in names:
        own = [w for w in rows_with if rows_with_label[w, name]]
        if not own:
            raise PipelineError(
                f"The training rows have no row labelled {name!r}, which the model knows; run "
                "`dvc repro` so that the model and the split come from the same data."
            )
        common = [w for w in own if rows_with[w] >= MIN_ROWS] or own
        words[name] = min(
            common, key=lambda w: (-rows_with_label[w, name] / rows_with[w], -rows_with[w], w)
        )
    return words


def _scores_of(score: Scorer, texts: list[str], known: dict[str, np.ndarray]) -> dict:
    """Scores of `texts`, each distinct text scored once and none of those `known` already:
    with the default cleaning (lower case, no punctuation) some perturbations clean to the text
    as written, whose scores the caller has."""
    todo = sorted(set(texts) - set(known))
    return known | dict(zip(todo, score(todo), strict=True)) if todo else known


def robustness_scores(
    score: Scorer,
    clean: Cleaner,
    originals: list[str],
    predicted: np.ndarray,
    scores: np.ndarray,
    directional: tuple[list[int], list[str]] | None,
) -> dict:
    """The `robustness` block: for each perturbation of the raw texts `originals`, the share of
    rows whose predicted label (ids `predicted`, of the rows as written) changes; with
    `directional` = (label id, word) per row, `directional`: the share of rows whose score of
    that label (in `scores`, the rows as written) falls by more than TOLERANCE when the word is
    appended. Every perturbed text is cleaned by `clean`, and all are scored in one call.
    Beyond MAX_ROWS rows a sample of them is checked (checked_rows; `rows` says how many)."""
    rows = checked_rows(len(originals))
    originals, predicted, scores = [originals[i] for i in rows], predicted[rows], scores[rows]
    if directional is not None:
        directional = ([directional[0][i] for i in rows], [directional[1][i] for i in rows])
    perturbed = {name: [clean(text) for text in perturb(originals, name)] for name in PERTURBATIONS}
    targets, words = directional or ([], [])
    appended = [clean(f"{text} {word}") for text, word in zip(originals, words, strict=False)]
    written = dict(zip((clean(text) for text in originals), scores, strict=True))
    scored = _scores_of(score, [t for ts in perturbed.values() for t in ts] + appended, written)
    result: dict[str, float | int] = {"rows": len(rows)}
    for name, texts in perturbed.items():
        changed = np.array([scored[t] for t in texts]).argmax(axis=1) != predicted
        result[name] = round(float(changed.mean()), 6)
    if directional is not None:
        each = np.arange(len(targets))
        after = np.array([scored[t] for t in appended])[each, targets]
        lowered = after < scores[each, targets] - TOLERANCE
        result["directional"] = round(float(lowered.mean()), 6)
    return result
