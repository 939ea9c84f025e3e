"""A positive control for positional encodings: a task that a bag of words cannot solve and
word order can, derived from any (text, label) CSV.

    python bench/order_task.py ../shared/data/mmlu_science_2265.csv /tmp/order_mmlu.csv \
        --text-column eng --label-column Subject --seed 42
    dvc exp run -S data.raw=/tmp/order_mmlu.csv -S data.text_column=eng \
        -S data.label_column=Subject

Each output row joins two texts of different labels, "A B", and is labelled with A's label
(the first text's). The design, and why:

- Both texts' subjects are in the row, so words alone tell which two labels are in play but
  not which of the two came first: only order does.
- Exactly balanced orders: for every pair of labels {a, b}, as many rows have an a-text first
  as a b-text first (and so every label is the answer equally often). A model that sees only
  the bag of words (TF-IDF + SVM, or the Transformer with `pos_encoding: none` and mean
  pooling, which is blind to order) then has nothing to prefer one order by, and can at best
  pick the right one of the two labels half the time: its ceiling is 0.50, while a model that
  reads order can reach what the source's labels allow (the real files' ~0.9 per text).
- Labelled by the FIRST text, and each text capped at --max-words words (runs of letters and
  digits, which is what the clean stage's punctuation rule keeps as tokens; 60 by default, so
  two texts stay within model.max_seq_len 128, a [CLS] token included): the label-bearing part
  is never cut by truncation, and the second text is never cut away either (were it, the row
  would hold one subject and a bag of words could solve it).
- Texts are drawn per label from a seeded shuffle, each used before any is reused, so rare
  labels' texts are reused more (each text appears about equally often first and second).
  A joined text is never repeated (the split stage would drop the repeat).

The output has two columns, named as the input's --text-column and --label-column, so the
pipeline reads it with the same data.* keys as its source. The input's other columns are
ignored. Seeded: the same input and --seed give the same bytes.
"""

import csv
import itertools
import random
import re
import sys
from pathlib import Path

import click
import pandas as pd

# A word as the clean stage keeps it: a run of letters and digits (punctuation and _ become
# spaces there), so a text of N of them is at most N tokens.
_WORD = re.compile(r"[^\W_]+")


def cap_words(text: str, max_words: int) -> str:
    """`text` up to the end of its `max_words`-th word (the original characters)."""
    ends = [m.end() for m in itertools.islice(_WORD.finditer(text), max_words)]
    if len(ends) < max_words:
        return text.strip()
    return text[: ends[-1]].strip()


def read_texts(path: Path, text_column: str, label_column: str) -> dict[str, list[str]]:
    """The non-empty texts of each label, in file order."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise click.ClickException(f"cannot read {path} as a UTF-8 CSV ({err}).") from None
    for column, option in ((text_column, "--text-column"), (label_column, "--label-column")):
        if column not in table.columns:
            raise click.ClickException(
                f"{path} has no column {column!r} ({option}); its columns are "
                f"{', '.join(map(repr, table.columns))}."
            )
    texts: dict[str, list[str]] = {}
    for text, label in zip(table[text_column], table[label_column], strict=True):
        if text.strip() and label.strip() and _WORD.search(text):
            texts.setdefault(label.strip(), []).append(text)
    if len(texts) < 2:
        raise click.ClickException(
            f"{path} has {len(texts)} label(s) with texts; joining two texts of different "
            "labels needs at least 2."
        )
    return texts


class Draw:
    """Texts of one label, each used once before any is reused, in a seeded order."""

    def __init__(self, texts: list[str], rng: random.Random) -> None:
        self.texts, self.rng, self.queue = texts, rng, []

    def next(self) -> str:
        if not self.queue:
            self.queue = self.rng.sample(self.texts, len(self.texts))
        return self.queue.pop()


def order_rows(
    texts: dict[str, list[str]], rows: int, max_words: int, seed: int
) -> list[tuple[str, str]]:
    """(joined text, first text's label) rows, as many with each label of every pair first."""
    rng = random.Random(seed)
    labels = sorted(texts)
    draws = {label: Draw([cap_words(t, max_words) for t in texts[label]], rng) for label in labels}
    pairs = list(itertools.permutations(labels, 2))  # ordered: (first, second)
    per_pair = max(1, rows // len(pairs))
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for first, second in pairs:
        made = 0
        for _ in range(100 * per_pair):  # retries for repeats; rows are few per pair
            if made == per_pair:
                break
            text = f"{draws[first].next()} {draws[second].next()}"
            if text not in seen:
                seen.add(text)
                out.append((text, first))
                made += 1
        else:
            raise click.ClickException(
                f"labels {first!r} and {second!r} have too few distinct texts for "
                f"{per_pair} different rows; ask for fewer --rows."
            )
    rng.shuffle(out)
    return out


@click.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option(
    "--rows",
    default=2400,
    show_default=True,
    help="Rows to write, rounded down to a multiple of the ordered label pairs.",
)
@click.option(
    "--max-words",
    default=60,
    show_default=True,
    help="Words kept of each text (2 x this + 1 must fit model.max_seq_len).",
)
def main(
    source: Path,
    output: Path,
    text_column: str,
    label_column: str,
    seed: int,
    rows: int,
    max_words: int,
) -> None:
    """Write OUTPUT: rows of SOURCE's texts joined in pairs of different labels, each labelled
    with its first text's label (a bag of words can reach 0.50 at best)."""
    if rows < 1 or max_words < 1:
        raise click.ClickException("--rows and --max-words must be at least 1.")
    if output.resolve() == source.resolve():
        raise click.ClickException("OUTPUT is SOURCE; write the task to another file.")
    texts = read_texts(source, text_column, label_column)
    joined = order_rows(texts, rows, max_words, seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow([text_column, label_column])
        writer.writerows(joined)
    counts = ", ".join(
        f"{label} {n}"
        for label, n in sorted(pd.Series([label for _, label in joined]).value_counts().items())
    )
    click.echo(f"{output}: {len(joined)} rows ({counts}), seed {seed}", err=True)


if __name__ == "__main__":
    sys.exit(main())
