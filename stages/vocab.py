"""Stage `vocab`: train.csv -> vocab.json (tokens and labels of the training rows only)."""

import sys
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.cli import params_option, train_option, user_errors
from pipeline.config import load_params
from pipeline.data import LABEL, TEXT, read_table
from pipeline.vocab import build_vocab, save_vocab


@click.command()
@params_option
@train_option
@click.option(
    "--output", type=click.Path(path_type=Path), required=True, help="Vocabulary JSON to write."
)
def main(params_path: Path, train_path: Path, output: Path) -> None:
    """Build the vocabulary from the training rows only, so no validation word leaks in:
    tokens seen at least vocab.min_freq times, at most vocab.max_size of them."""
    with user_errors(output):
        params = load_params(params_path)
        train = read_table(train_path)
        vocab = build_vocab(train[TEXT], train[LABEL], params.vocab.min_freq, params.vocab.max_size)
        save_vocab(vocab, output)
    click.echo(
        f"vocab: {len(vocab.tokens)} tokens (specials included), "
        f"{len(vocab.labels)} labels -> {output}"
    )


if __name__ == "__main__":
    main()
