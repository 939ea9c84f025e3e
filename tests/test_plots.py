"""Pictures of the positional encoding."""

import pytest
import torch

from pipeline.model import sinusoidal_table
from pipeline.plots import cosine_similarity, positional_encoding_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["pe_final.png", "pe_change.png", "pe_cosine.png"]


def tables():
    torch.manual_seed(0)
    initial = torch.randn(12, 8) * 0.1
    final = initial + torch.randn(12, 8)
    return final, initial


CASES = {
    "learned": lambda: ("learned", *tables()),
    "sinusoidal": lambda: ("sinusoidal", sinusoidal_table(12, 8), None),
    "none": lambda: ("none", None, None),
}


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 2000, path  # a real picture, not an empty file


@pytest.mark.parametrize("case", CASES)
def test_writes_three_png_files(tmp_path, case):
    kind, final, initial = CASES[case]()
    out = tmp_path / "plots"
    paths = positional_encoding_plots(kind, final, initial, used=7, out_dir=out)
    assert [p.name for p in paths] == NAMES
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)  # no temp files left
    for path in paths:
        assert_png(path)


def test_fixed_and_missing_encodings_draw_notes_not_heatmaps(tmp_path):
    learned = positional_encoding_plots("learned", *tables(), used=7, out_dir=tmp_path / "l")
    fixed = positional_encoding_plots(
        "sinusoidal", sinusoidal_table(12, 8), None, used=7, out_dir=tmp_path / "s"
    )
    none = positional_encoding_plots("none", None, None, used=7, out_dir=tmp_path / "n")
    # A note is a small (8x2 inch) figure, a heatmap a large one.
    assert fixed[1].stat().st_size < learned[1].stat().st_size
    assert fixed[0].stat().st_size > none[0].stat().st_size
    # The three notes of "none" are the same picture.
    assert none[0].read_bytes() == none[1].read_bytes() == none[2].read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_writing_twice_gives_identical_bytes(tmp_path, case):
    first = positional_encoding_plots(*CASES[case](), used=7, out_dir=tmp_path / "a")
    second = positional_encoding_plots(*CASES[case](), used=7, out_dir=tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_different_data_gives_different_pictures(tmp_path):
    final, initial = tables()
    a = positional_encoding_plots("learned", final, initial, used=7, out_dir=tmp_path / "a")
    b = positional_encoding_plots("learned", final * -1, initial, used=7, out_dir=tmp_path / "b")
    assert a[0].read_bytes() != b[0].read_bytes()


def test_cosine_similarity_is_symmetric_with_unit_diagonal():
    table = torch.randn(10, 6, generator=torch.Generator().manual_seed(1))
    sim = cosine_similarity(table)
    assert sim.shape == (10, 10)
    assert torch.allclose(sim.diagonal(), torch.ones(10), atol=1e-6)
    assert torch.allclose(sim, sim.T, atol=1e-6)
    assert sim.abs().max() <= 1 + 1e-6


def test_cosine_similarity_values():
    table = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    sim = cosine_similarity(table)
    assert sim[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert sim[0, 2].item() == pytest.approx(-1.0, abs=1e-6)
    assert sim[0, 3].item() == pytest.approx(2**-0.5, abs=1e-6)
