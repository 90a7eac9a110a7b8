"""The interactive page as a file: one self-contained HTML document that fetches nothing, whose data
no name can break out of, written by render(..., "x.html") for a page or any picture. What the page
does in a browser is tested in test_page_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import graphviz
import pytest
from picture_helpers import HAS_DOT
from test_picture_text import HOSTILE

from visualize import draw_steps, preflight
from visualize.cli import build_model, main
from visualize.export import graph_dict
from visualize.page import SCRIPTS, STATIC, explore
from visualize.render import render


def _data(text: str) -> dict:
    """The JSON the page holds (read back the way the browser does: the script element's text)."""
    found = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_render_writes_one_self_contained_page_that_fetches_nothing(tmp_path):
    loss, states, _ = build_model("lstm", 3, 3)
    written = render(explore(loss, states), tmp_path / "x.html")
    text = written.read_text(encoding="utf-8")
    assert written == tmp_path / "x.html" and text.startswith("<!DOCTYPE html>")
    assert not re.search(r"\b(src|href|action)\s*=\s*[\"']", text, re.I), "nothing is loaded from anywhere"
    assert not re.search(r"fetch\(|XMLHttpRequest|import\(|url\(|WebSocket", text), "nor fetched by the script"
    assert "default-src 'none'" in text, "and the page's own policy forbids it"
    assert text.count("<script") == 2 and text.count("</script>") == 2
    for name in SCRIPTS:  # every script is inlined, whole
        assert (STATIC / name).read_text(encoding="utf-8") in text


@pytest.mark.parametrize("text", [*HOSTILE, "</script><script>alert(1)</script>", "<!--"],
                         ids=[f"hostile{k}" for k in range(len(HOSTILE) + 2)])
def test_a_hostile_name_stays_data_inside_the_page(text, tmp_path):
    loss, states, _ = build_model("rnn", 2, 2)
    loss.name = text
    page = render(explore(loss, states, title=text), tmp_path / "x.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and page.count("<script") == 2, "no name closes or opens a script"
    data = _data(page)
    assert data["title"] == text and data["graph"]["nodes"][-1]["name"] == text


def test_the_page_holds_to_json_numbers_unchanged(tmp_path):
    loss, states, _ = build_model("gru", 3, 2)
    data = _data(explore(loss, states).html())
    exported = graph_dict(loss, data_limit=16)
    for ours, theirs in zip(data["graph"]["edges"], exported["edges"]):
        for key in ("parent", "child", "position", "derivative", "jacobian_norm", "observed_gain"):
            assert ours[key] == theirs[key]
    for ours, theirs in zip(data["graph"]["nodes"], exported["nodes"]):
        assert {k: ours[k] for k in theirs} == theirs


def test_explore_refuses_what_it_cannot_show():
    loss, states, model = build_model("rnn", 2, 2)
    with pytest.raises(ValueError, match="view must be one of"):
        explore(loss, states, view="graph")
    with pytest.raises(ValueError, match="needs the states"):
        explore(loss, view="steps")
    other, _, _ = build_model("rnn", 2, 2, seed=1)
    with pytest.raises(ValueError, match="not among the nodes"):
        explore(loss, states, source=other)


def test_a_page_is_written_only_as_html(tmp_path):
    loss, states, _ = build_model("rnn", 2, 2)
    with pytest.raises(ValueError, match="written as .html"):
        render(explore(loss, states), tmp_path / "x.svg")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
def test_any_picture_renders_as_a_page_with_its_own_svg(tmp_path):
    loss, states, _ = build_model("rnn", 3, 2)
    text = render(draw_steps(loss, states), tmp_path / "steps.html").read_text(encoding="utf-8")
    data = _data(text)
    assert data["svg"].lstrip().startswith("<?xml") or "<svg" in data["svg"]


def test_the_scripts_are_package_data():
    """An installed package (not only this checkout) must carry the page's script and style."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    config = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "visualize.static" in config["tool"]["setuptools"]["packages"]
    patterns = config["tool"]["setuptools"]["package-data"]["visualize.static"]
    for name in [*SCRIPTS, "page.css"]:
        assert any(Path(name).match(p) for p in patterns), name


# ---- the command ---------------------------------------------------------------------------------

@pytest.fixture
def plenty_of_memory(monkeypatch):
    """The machine's free memory varies; the command's refusals are not what these tests are about."""
    monkeypatch.setattr(preflight, "available_memory", lambda: 8_000_000_000)


def test_render_o_html_writes_a_hundred_step_lstms_page(tmp_path, capsys, plenty_of_memory):
    path = tmp_path / "lstm.html"
    assert main(["render", "--cell", "lstm", "--steps", "100", "--hidden", "16", "-o", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    assert path.stat().st_size <= 10_000_000, "a 100-step LSTM's page is at most 10 MB"
    data = _data(path.read_text(encoding="utf-8"))
    assert data["view"] == "ops" and len(data["steps"]["rows"]) == 101
    # past the op view's node limit a picture is refused, but the page opens one time step at a time
    longer = ["render", "--cell", "lstm", "--steps", "120", "--hidden", "16", "-o"]
    assert main([*longer, str(tmp_path / "x.svg")]) == 2 and "--max-nodes" in capsys.readouterr().err
    assert main([*longer, str(tmp_path / "x.html")]) == 0


def test_render_o_html_opens_on_the_view_asked_for(tmp_path, plenty_of_memory):
    path = tmp_path / "x.html"
    assert main(["render", "--view", "path", "--source", "weight_hh", "--steps", "3", "-o", str(path)]) == 0
    data = _data(path.read_text(encoding="utf-8"))
    assert data["graph"]["nodes"][data["select"]]["name"] in ("weight_hh", "W_hh")  # the textbook cell says W_hh
    assert main(["render", "--view", "steps", "--steps", "3", "-o", str(path)]) == 0
    assert _data(path.read_text(encoding="utf-8"))["view"] == "steps"


def test_train_writes_the_page_beside_its_pictures(tmp_path, capsys, plenty_of_memory):
    text = tmp_path / "fox.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 80, encoding="utf-8")
    out = tmp_path / "pictures"
    assert main(["train", "--hidden", "8", "--seq", "6", "--batch", "2", "--steps", "2", "--text", str(text),
                 "--checkpoint", str(tmp_path / "run.npz"), "--out", str(out)]) == 0
    assert f"page: {out / 'run.html'}" in capsys.readouterr().out
    assert (out / "run_steps.png").exists() or (out / "run_steps.dot").exists()
    data = _data((out / "run.html").read_text(encoding="utf-8"))
    assert data["view"] == "steps" and len(data["steps"]["rows"]) == 7 and data["lags"]["rows"]


def test_without_graphviz_a_pictures_page_says_so_and_keeps_the_source(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    loss, states, _ = build_model("rnn", 2, 2)
    picture = draw_steps(loss, states)
    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    data = _data(render(picture, tmp_path / "x.html").read_text(encoding="utf-8"))
    assert data["svg"] is None and data["source"] == picture.source
    assert "dot program was not found" in data["error"] and "install Graphviz" in data["error"]
