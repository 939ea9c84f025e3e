"""Pictures of the positional encoding, written as PNG files that `dvc plots show` embeds."""

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _save(fig: "Figure", path: Path) -> None:
    # No "Software" stamp: the PNG bytes then depend on the data alone.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


def _figure(width: float, height: float) -> "Figure":
    # matplotlib loads here, not at the top: ~0.4 s that the evaluate stage's `--help` and
    # usage errors need not wait for. Figure, not pyplot: no GUI backend, no global state.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _heatmap(
    matrix: torch.Tensor,
    title: str,
    xlabel: str,
    ylabel: str,
    used: int,
    path: Path,
    cmap: str = "RdBu_r",
    symmetric: bool = True,
) -> None:
    fig = _figure(8, 5)
    ax = fig.subplots()
    values = matrix.detach().cpu().numpy()
    limit = float(abs(values).max()) or 1.0
    image = ax.imshow(
        values,
        aspect="auto",
        cmap=cmap,
        interpolation="nearest",
        vmin=-limit if symmetric else None,
        vmax=limit if symmetric else None,
    )
    fig.colorbar(image, ax=ax)
    if used < matrix.shape[0]:
        # Positions past the longest training text never receive a gradient.
        ax.axhline(used - 0.5, color="black", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    _save(fig, path)


def cosine_similarity(table: torch.Tensor) -> torch.Tensor:
    """(positions, positions) cosine similarity between the rows of an encoding table."""
    unit = torch.nn.functional.normalize(table.float(), dim=1)
    return unit @ unit.T


def _note(text: str, path: Path) -> None:
    fig = _figure(8, 2)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    _save(fig, path)


def positional_encoding_plots(
    kind: str,
    final: torch.Tensor | None,
    initial: torch.Tensor | None,
    used: int,
    out_dir: Path,
    pretrained: str | None = None,
) -> list[Path]:
    """Write the encoding's heatmap, its change during training and its cosine similarity.

    `used` is the longest encoded training row: rows of the table past it were never trained.
    For a pretrained encoder (`pretrained` names it) with its learned table, the heatmap shows
    the table before fine-tuning, what the base model learned; the change, what fine-tuning
    made of it; the cosine similarity, the table after fine-tuning.
    """
    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.png" for name in ("pe_final", "pe_change", "pe_cosine")]
    if final is None:
        for path in paths:
            _note("pos_encoding: none - this model has no positional encoding to draw.", path)
        return paths
    if pretrained is not None and initial is not None:
        shown, title = initial, f"Position embeddings of {pretrained} before fine-tuning"
        tuned = "fine-tuning"
    else:
        shown, title = final, f"Positional encoding ({kind}) after training"
        tuned = "training"
    if pretrained is not None and initial is None:
        title = f"Positional encoding ({kind}, fixed) in place of {pretrained}'s"
    _heatmap(shown, title, "dimension", "position", used, paths[0])
    if initial is None:
        _note(f"pos_encoding: {kind} - the encoding is fixed, so it did not change.", paths[1])
    else:
        _heatmap(
            final - initial,
            f"Change of the {kind} positional encoding during {tuned}",
            "dimension",
            "position",
            used,
            paths[1],
        )
    _heatmap(
        cosine_similarity(final),
        f"Cosine similarity between positions ({kind}"
        + (", after fine-tuning)" if pretrained is not None else ")"),
        "position",
        "position",
        used,
        paths[2],
    )
    return paths
