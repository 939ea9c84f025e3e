"""Cleaning and tokenising one text."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import CleanParams
from pipeline.text import clean_text, tokenize

ALL = CleanParams(lowercase=True, remove_links=True, remove_latex=True, remove_punctuation=True)


def only(**flags) -> CleanParams:
    """Every step off except the ones named."""
    off = CleanParams(
        lowercase=False, remove_links=False, remove_latex=False, remove_punctuation=False
    )
    return dataclasses.replace(off, **flags)


@pytest.mark.parametrize(
    "link",
    ["http://example.com/a?b=1", "https://x.org/path", "www.site.net/page", "HTTPS://UP.COM"],
)
def test_links_are_removed(link):
    assert clean_text(f"see {link} now", ALL) == "see now"


def test_latex_keeps_command_names_and_drops_backslashes():
    out = clean_text(r"Energy is \( \frac{1}{2} m v^{2} \)", ALL)
    assert "frac" in out.split()
    assert "\\" not in out
    assert out == "energy is frac 1 2 m v 2"


def test_latex_layout_commands_and_delimiters_are_dropped():
    out = clean_text(r"$\left( \mathrm{x} \right)$ and \[ \sqrt{y} \]", ALL)
    assert out == "x and sqrt y"


def test_punctuation_removed_lowercased_whitespace_collapsed():
    assert clean_text("  What IS   the value,\tof x?!\n(Answer: 5.)  ", ALL) == (
        "what is the value of x answer 5"
    )


def test_underscore_counts_as_punctuation():
    assert clean_text("snake_case", ALL) == "snake case"


def test_non_latin_letters_are_kept():
    assert clean_text("Énergie: ΔE = ħω", ALL) == "énergie δe ħω"


def test_lowercase_off_keeps_case():
    assert clean_text("Hello World", only(remove_punctuation=True)) == "Hello World"


def test_remove_links_off_keeps_links():
    out = clean_text("see http://x.org now", only(lowercase=True))
    assert out == "see http://x.org now"


def test_remove_links_on_alone_keeps_punctuation():
    assert clean_text("see http://x.org, now!", only(remove_links=True)) == "see now!"


def test_remove_latex_off_keeps_backslashes():
    out = clean_text(r"\frac{1}{2}", only(lowercase=True))
    assert out == r"\frac{1}{2}"


def test_remove_latex_on_alone_keeps_braces():
    assert clean_text(r"\( \frac{1}{2} \)", only(remove_latex=True)) == "frac {1}{2}"


def test_remove_latex_on_alone_drops_stray_backslashes():
    assert clean_text(r"50\% of a \\ b", only(remove_latex=True)) == "50 % of a b"


def test_remove_punctuation_off_keeps_punctuation():
    assert clean_text("a, b?  c.", only(lowercase=True)) == "a, b? c."


def test_whitespace_is_collapsed_even_with_every_step_off():
    assert clean_text("  a \t b\n\nc  ", only()) == "a b c"


def test_tokenize_splits_on_any_whitespace():
    assert tokenize("a  b\tc\nd") == ["a", "b", "c", "d"]
    assert tokenize("") == []
    assert tokenize("   ") == []


@given(st.text())
def test_clean_never_raises_and_returns_collapsed_text(text):
    out = clean_text(text, ALL)
    assert isinstance(out, str)
    assert out == " ".join(out.split())


@given(st.text())
def test_clean_is_idempotent(text):
    once = clean_text(text, ALL)
    assert clean_text(once, ALL) == once


@given(st.text())
def test_clean_output_has_no_link_or_latex_residue(text):
    out = clean_text(text, ALL)
    for residue in ("://", "www.", "\\", "\\(", "$"):
        assert residue not in out
    assert out == out.lower()


link_text = st.lists(
    st.one_of(
        st.text(max_size=8),
        st.sampled_from(["http://", "https://", "www.", "HTTP://a.b", "Www.x"]),
    ),
    max_size=8,
).map("".join)


@given(link_text)
def test_removing_links_alone_leaves_no_link(text):
    out = clean_text(text, only(remove_links=True)).lower()
    for prefix in ("http://", "https://", "ftp://", "www."):
        assert prefix not in out


@given(st.text())
def test_tokens_of_clean_text_rejoin_to_it(text):
    out = clean_text(text, ALL)
    tokens = tokenize(out)
    assert " ".join(tokens) == out
    assert all(token.strip() == token and token for token in tokens)


any_params = st.builds(CleanParams, st.booleans(), st.booleans(), st.booleans(), st.booleans())


@given(st.text(), any_params)
def test_every_combination_of_clean_params_is_idempotent_and_leaves_no_residue(text, params):
    once = clean_text(text, params)
    assert clean_text(once, params) == once
    assert " ".join(tokenize(once)) == once
    if params.remove_links:
        for prefix in ("http://", "https://", "ftp://", "www."):
            assert prefix not in once.lower()
    if params.remove_latex:
        assert "\\" not in once and "$" not in once
