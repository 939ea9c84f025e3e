"""Stage `pretrained`: the pretrained encoder's files -> models/pretrained/ (DVC-tracked).

With model.encoder 'pretrained' it copies config.json, model.safetensors and the tokenizer
files of model.pretrained (a directory, or a package file such as
models/sources/all-minilm-l6-v2.yaml naming an installed package and its release) into the
output, so that dvc.lock records their hash, a new base model reruns training and `dvc push`
shares them. With 'scratch' it writes a one-line placeholder and needs no extra.
"""

import shutil
import sys
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.cli import params_option, user_errors
from pipeline.config import load_params
from pipeline.pretrained import export, write_placeholder


@click.command()
@params_option
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write the encoder's files to (replaced if it exists).",
)
def main(params_path: Path, output: Path) -> None:
    """Export the pretrained encoder that model.pretrained names (model.encoder 'pretrained'),
    or a placeholder (model.encoder 'scratch')."""
    with user_errors(output):
        params = load_params(params_path)
        if output.exists():
            shutil.rmtree(output)
        if params.model.encoder == "scratch":
            write_placeholder(output)
            click.echo(f"pretrained: model.encoder is scratch, placeholder -> {output}")
            return
        names = export(params.model.pretrained, output)
    click.echo(f"pretrained: {params.model.pretrained} ({', '.join(names)}) -> {output}")


if __name__ == "__main__":
    main()
