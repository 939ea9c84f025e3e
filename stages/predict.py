"""Label new texts with the trained model. A command, not a DVC stage.

python stages/predict.py "What is the SI unit of force?" "Balance Fe + O2 -> Fe2O3"
printf 'first text\nsecond text\n' | python stages/predict.py --format json
python stages/predict.py --input new.csv --text-column question --format csv > labelled.csv
"""

import sys
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline import portable

# Before torch loads: the same kernels, so the same probabilities, on any x86-64 CPU (pinned
# whatever train.portable says: predict has no params, and a few texts cost milliseconds).
portable.apply()

from pipeline.cli import user_errors
from pipeline.data import read_columns
from pipeline.errors import PipelineError


def read_texts(texts: tuple[str, ...], input_path: Path | None, text_column: str) -> list[str]:
    """Texts from the arguments, else from a CSV column, else one per line of stdin."""
    if texts:
        return list(texts)
    if input_path is not None:
        column = [(text_column, "--text-column")]
        table = read_columns(input_path, column, fix="check the --input path")
        return list(table[text_column])
    lines = [line.strip() for line in sys.stdin.read().splitlines()]
    return [line for line in lines if line]


@click.command()
@click.argument("texts", nargs=-1)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default="models/model.pt",
    show_default=True,
    help="Checkpoint to load.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    help="CSV file whose --text-column holds the texts (instead of arguments).",
)
@click.option(
    "--text-column",
    default="text",
    show_default=True,
    help="Column of the --input CSV that holds the texts.",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Leave a text unlabelled (empty label, probabilities kept) when its top probability "
    "is below this; the count goes to stderr.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output: aligned table, JSON records, or CSV.",
)
def main(
    texts: tuple[str, ...],
    model_path: Path,
    input_path: Path | None,
    text_column: str,
    min_confidence: float,
    fmt: str,
) -> None:
    """Print the predicted label and the probability of every label for each text.

    Texts come from the arguments, or from --input, or one per line on stdin. A text with no
    words left after cleaning gets an empty label and a warning; so does, with
    --min-confidence P, each text whose top probability is below P (counted on stderr)."""
    with user_errors():
        texts_in = read_texts(texts, input_path, text_column)
        if not texts_in:
            raise PipelineError("No texts to label; pass them as arguments, --input or stdin.")
        # torch and the model's code load only now: `--help`, usage errors and a bad input
        # need not wait the ~3 s they take.
        import torch

        from pipeline.checkpoint import load_checkpoint
        from pipeline.predict import predict_texts

        checkpoint = load_checkpoint(model_path)
        # As in training: a fixed count keeps results identical, and more threads than
        # cores (or busy cores) makes small matrices far slower, not faster.
        torch.set_num_threads(checkpoint.threads)
        out = predict_texts(checkpoint, texts_in, min_confidence)
    unlabelled = out["label"] == ""
    no_words = out.iloc[:, 2:].isna().all(axis=1)  # the p_<label> columns: NaN when not scored
    unsure = int((unlabelled & ~no_words).sum())
    if unsure:
        click.echo(
            f"{unsure} of {len(out)} texts have a top probability below {min_confidence} "
            "(--min-confidence); they are not labelled.",
            err=True,
        )
    for number in out.index[no_words]:
        click.echo(
            f"Warning: text {number + 1} ({texts_in[number][:40]!r}) has no words left after "
            "cleaning; it is not labelled.",
            err=True,
        )
    if fmt == "json":
        click.echo(out.to_json(orient="records", force_ascii=False, indent=1))
    elif fmt == "csv":
        click.echo(out.to_csv(index=False), nl=False)
    else:
        out["text"] = out["text"].str.slice(0, 60)
        click.echo(out.to_string(index=False))


if __name__ == "__main__":
    main()
