"""The README a newcomer reads in a few minutes, in the order issue 21 asks: what it is, the two
commands, one picture, the lessons gallery with a picture each, then the rest; every link in it leads
somewhere; the speed figures live in docs/perf.md. (Its first snippet runs in tests/test_notebook.py,
its pictures' widths and text sizes are checked in tests/test_readable_pictures.py.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
WORDS = 1700  # the README was 3,182 words; prose outside markup, code included


def _sections() -> list[tuple[str, str]]:
    """(heading, body) of each ## section, in order; the text before the first is ("", intro)."""
    parts = re.split(r"^## (.*)$", README, flags=re.M)
    return [("", parts[0])] + list(zip(parts[1::2], parts[2::2]))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_it_says_what_it_is_then_the_two_commands_then_one_picture_then_the_lessons():
    sections = _sections()
    intro = sections[0][1]
    assert "autograd engine" in intro and "backpropagation through time" in intro and "![" not in intro
    headings = [h for h, _ in sections[1:]]
    assert headings[:3] == ["Two commands", "What it draws", "Lessons"]
    commands, picture, lessons = (body for _, body in sections[1:4])
    assert "scripts/dev.sh demo" in commands and "scripts/dev.sh test" in commands and "![" not in commands
    assert len(re.findall(r"!\[[^\]]*\]\([^)]+\.png\)", picture)) == 1  # one picture
    assert "<img" not in "".join(body for _, body in sections[:3])  # no picture before it


def test_the_two_commands_are_exactly_the_ones_scripts_dev_sh_runs():
    block = re.search(r"## Two commands.*?```sh\n(.*?)```", README, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["scripts/dev.sh demo", "scripts/dev.sh test"]
    script = (ROOT / "scripts" / "dev.sh").read_text(encoding="utf-8")
    assert re.search(r"^\s*demo\)", script, flags=re.M) and re.search(r"^\s*test\)", script, flags=re.M)


def test_the_gallery_has_every_lesson_with_its_picture_and_a_link_to_its_section():
    gallery = dict(_sections())["Lessons"]
    lessons = sorted(p.stem for p in (ROOT / "examples" / "lessons").glob("[0-9][0-9]_*.py"))
    anchors = {_slug(h) for h in re.findall(r"^## (.*)$", (ROOT / "docs" / "lessons.md").read_text(encoding="utf-8"),
                                            flags=re.M)}
    cells = re.findall(r'<a href="docs/lessons\.md#([^"]+)"><img src="(docs/lessons/(\d\d)_[^"]+\.png)"', gallery)
    assert [number for _, _, number in cells] == [name[:2] for name in lessons]  # one each, in order
    for anchor, picture, _ in cells:
        assert anchor in anchors, f"docs/lessons.md has no section #{anchor}"
        assert (ROOT / picture).is_file(), picture


def test_every_relative_link_leads_to_a_file():
    targets = re.findall(r"\]\(([^)\s#]+)[^)]*\)", README) + re.findall(r'(?:href|src)="([^"#]+)', README)
    local = [t for t in targets if not re.match(r"\w+://", t)]
    assert len(local) > 20
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_it_is_short_and_leaves_the_speed_figures_to_docs_perf():
    prose = re.sub(r"<[^>]+>", " ", README)
    assert len(prose.split()) <= WORDS
    assert "Speed: see [docs/perf.md](docs/perf.md)" in README
    assert "| benchmark |" not in README and "page faults" not in README and " ms" not in README
