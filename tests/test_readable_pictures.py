"""Pictures that can be read where newcomers see them: on GitHub, whose README column is about 830 px
wide and shrinks anything wider to fit, and in a notebook's output column, about as wide.

- every PNG the README refers to is at most 2,000 px wide (read from the PNG's header);
- every picture the README (or docs/pictures.md, its guide to the pictures) shows at full width has text at least 8 px tall once shrunk to the column
  (its SVG, drawn by the same code, gives the font sizes and the natural width);
- the README's pictures are those docs/make_pictures.py makes from the current code (the text in each
  committed SVG is the text a fresh drawing has);
- the step view's default layout is narrow enough to be read there, however long the sequence.
"""

from __future__ import annotations

import re
import struct
import sys
from pathlib import Path

import pytest
from picture_helpers import HAS_DOT

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PICTURES_PAGE = ROOT / "docs" / "pictures.md"  # how to read the pictures: the README's next page
WIDEST_PNG = 2000  # px
COLUMN = 830  # px: GitHub's README column on a laptop, and about a notebook's output width
SMALLEST_TEXT = 8.0  # px, as shown in that column


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from the PNG's IHDR chunk, the first after the 8-byte signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def smallest_text_shown(svg: str, column: float = COLUMN) -> float:
    """The height in px of the smallest text of a Graphviz SVG, shown no wider than ``column`` px
    (its natural size is 4/3 px per pt; wider pictures are shrunk to fit, as GitHub and Jupyter do)."""
    width_pt = float(re.search(r'<svg width="([\d.]+)pt"', svg).group(1))
    smallest_pt = min(float(size) for size in re.findall(r'font-size="([\d.]+)"', svg))
    natural = width_pt * 4 / 3
    return smallest_pt * 4 / 3 * min(natural, column) / natural


def pictures(page: Path = README) -> tuple[list[Path], list[Path]]:
    """(every PNG a Markdown page refers to, those it shows at full width: ``![alt](path)``)."""
    text = page.read_text(encoding="utf-8")
    every = re.findall(r"\]\(([^)\s]+\.png)\)|src=\"([^\"]+\.png)\"", text)
    shown = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", text)
    return [page.parent / (a or b) for a, b in every], [page.parent / path for path in shown]


def test_the_readme_refers_to_pictures_and_each_exists():
    every, shown = pictures()
    assert len(shown) >= 1 and len(every) >= len(shown) + 14  # and a picture for each of the 14 lessons
    assert [p for p in every + pictures(PICTURES_PAGE)[0] if not p.is_file()] == []


def test_every_png_the_readme_refers_to_is_at_most_2000_px_wide():
    too_wide = {str(p.relative_to(ROOT)): png_size(p)[0] for p in pictures()[0] if png_size(p)[0] > WIDEST_PNG}
    assert too_wide == {}, "redraw them narrower (python docs/make_pictures.py) or link a narrower picture"


def test_png_size_is_read_from_the_header(tmp_path):
    path = tmp_path / "one.png"
    # The signature, then IHDR: length 13, type, width 3, height 2, then the rest of a real header.
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 3, 2) + bytes(5))
    assert png_size(path) == (3, 2)


@pytest.mark.parametrize("page", ["README.md", "docs/pictures.md"])
def test_every_picture_a_page_shows_has_text_a_reader_can_read(page):
    shown = pictures(ROOT / page)[1]
    assert shown
    for png in shown:
        assert png_size(png)[0] <= WIDEST_PNG
        svg = png.with_suffix(".svg")
        assert svg.is_file(), f"{png.name}: {page} shows it at full width; its SVG gives the text sizes"
        smallest = smallest_text_shown(svg.read_text(encoding="utf-8"))
        assert smallest >= SMALLEST_TEXT, f"{png.name}: its smallest text is {smallest:.1f} px in a {COLUMN}-px column"
        # The PNG is the SVG's drawing at 1x to 2x: never narrower than the column it is shown in.
        assert png_size(png)[0] >= min(COLUMN, float(re.search(r'<svg width="([\d.]+)pt"', svg.read_text(
            encoding="utf-8")).group(1)) * 4 / 3)


def test_smallest_text_shown_shrinks_a_wide_picture_to_the_column():
    narrow = '<svg width="600pt" height="10pt"><text font-size="9.00">a</text><text font-size="14.00">b</text>'
    wide = narrow.replace("600pt", "1245pt")  # 1,660 px: shown at half its size
    assert smallest_text_shown(narrow) == pytest.approx(12.0)
    assert smallest_text_shown(wide) == pytest.approx(6.0)


def _text_of(svg: str) -> list[str]:
    """Every piece of text in an SVG, sorted (the layout may differ between Graphviz versions; the words
    and numbers may not)."""
    return sorted(re.sub(r"\s+", " ", t).strip() for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S))


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot program draws the pictures")
def test_the_readmes_pictures_are_what_make_pictures_draws_now(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "docs"))
    import make_pictures

    monkeypatch.setattr(make_pictures, "HERE", tmp_path)
    monkeypatch.setattr(make_pictures, "shrink_png", lambda path: None)
    make_pictures.main()
    stale = []
    for fresh in sorted(tmp_path.glob("*.svg")):
        committed = ROOT / "docs" / fresh.name
        if _text_of(committed.read_text(encoding="utf-8")) != _text_of(fresh.read_text(encoding="utf-8")):
            stale.append(fresh.name)
    assert stale == [], "run python docs/make_pictures.py and commit the pictures it writes"


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot program lays the picture out")
@pytest.mark.parametrize("steps", [3, 30, 200])
def test_the_step_views_default_layout_can_be_read_in_a_column(steps):
    import numpy as np

    from tinygrad_rnn import nn
    from visualize import compare_steps, draw_steps

    def run(cell):
        outputs, states = nn.RNN(cell)(np.random.default_rng(0).standard_normal((steps, 2, 3)), return_states=True)
        loss = (outputs[-1] ** 2).sum()
        loss.backward()
        return loss, states

    plain, gated = run(nn.RNNCell(3, 16, rng=1)), run(nn.LSTMCell(3, 16, rng=1))
    for picture in (draw_steps(*plain, title="A tanh RNN with a title long enough to need wrapping, as titles do "
                                             "when a reader writes one"),
                    compare_steps({"tanh RNN": plain, "LSTM": gated})):
        svg = picture.pipe(format="svg").decode("utf-8")
        assert smallest_text_shown(svg) >= SMALLEST_TEXT
