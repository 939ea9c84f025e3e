"""Stage `plots_template`: -> plots/template.html, the page `dvc plots show` fills offline."""

import sys
from pathlib import Path

import click

# The library of this work tree, the code DVC hashed for this stage, whatever pip installed
# (a queued experiment runs in a copy of the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.cli import user_errors
from pipeline.plots_page import write_page_template


@click.command()
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="HTML template to write (.dvc/config's plots.html_template points at it).",
)
def main(output: Path) -> None:
    """Write an HTML template for `dvc plots show` / `dvc plots diff` that holds vega,
    vega-lite and vega-embed inline (from the installed vl-convert-python), so that every
    chart draws with no network."""
    with user_errors(output):
        made_from = write_page_template(output)
    click.echo(f"plots_template: {made_from} -> {output}")


if __name__ == "__main__":
    main()
