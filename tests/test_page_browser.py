"""The interactive page in a real browser (Debian's chromium driven by playwright): it clicks and
hovers like a reader, and reads the numbers back against the exporters (to_json's graph, the path
view's products, diagnostics.steps, diagnostics.lags, a Monitor's history). Skipped only where
playwright or the browser is missing (scripts/dev.sh installs both)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from picture_helpers import HAS_DOT
from test_picture_text import HOSTILE

import tinygrad_rnn as tg
from tinygrad_rnn import Value, diagnostics, nn
from tinygrad_rnn.diagnostics import Monitor
from tinygrad_rnn.graph import walk
from tinygrad_rnn.optim import SGD
from visualize import draw_graph
from visualize.cli import build_model
from visualize.export import graph_dict
from visualize.lag_view import _shares
from visualize.page import explore, picture_page
from visualize.path_view import exact_norm, path_products
from visualize.render import render

CHROMIUM = os.environ.get("TINYGRAD_RNN_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra has it)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no browser at {CHROMIUM} (scripts/dev.sh installs Debian's chromium)", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("TINYGRAD_RNN_SHOTS", tempfile.gettempdir())) / "tinygrad_rnn_page_shots"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1400, "height": 850})
        yield context
        context.close()


@pytest.fixture
def open_page(browser, tmp_path):
    """open_page(page_or_picture) -> a browser tab showing it; the test fails on any script error."""
    tabs, errors = [], []

    def opener(page, name="x.html"):
        path = render(page, tmp_path / name)
        tab = browser.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.on("requestfailed", lambda request: errors.append("request " + request.url))
        tab.goto(path.resolve().as_uri())
        tab.wait_for_selector("body[data-ready='1']")
        tabs.append(tab)
        return tab

    yield opener
    for tab in tabs:
        tab.close()
    assert errors == []


def _shot(tab, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{name}.png"))


def _number(tab, selector: str) -> float | None:
    text = tab.inner_text(selector).strip()
    return None if text == "–" else float(text)


def test_hovering_an_edge_shows_to_json_numbers_and_shapes(open_page):
    loss, states, _ = build_model("lstm", 3, 3)
    exported = graph_dict(loss, data_limit=16)
    tab = open_page(explore(loss, states))
    tab.click("[data-step='2']")
    _shot(tab, "op_view_step_open")
    shown = tab.eval_on_selector_all("path.hit[data-edge]", "els => els.map(e => +e.dataset.edge)")
    inside = [i for i in shown if exported["nodes"][exported["edges"][i]["child"]]["time_step"] == 2]
    assert len(inside) > 10, "opening step 2 drew its edges one by one"
    checked = 0
    for i in inside[:12]:
        edge = exported["edges"][i]
        parent, child = exported["nodes"][edge["parent"]], exported["nodes"][edge["child"]]
        tab.hover(f"path.hit[data-edge='{i}']", force=True)
        if tab.get_attribute("#tip", "style").find("display: block") < 0:
            continue  # another element lay on the edge's middle
        assert _number(tab, "#tip [data-key=derivative] .num") == edge["derivative"]
        assert _number(tab, "#tip [data-key=jacobian_norm] .num") == edge["jacobian_norm"]
        assert _number(tab, "#tip [data-key=observed_gain] .num") == edge["observed_gain"]
        assert tab.inner_text("#tip [data-key=parent_shape]").endswith(" × ".join(map(str, parent["shape"])) or "scalar")
        assert tab.inner_text("#tip [data-key=child_shape]").endswith(" × ".join(map(str, child["shape"])) or "scalar")
        checked += 1
        tab.mouse.move(2, 840)
    assert checked >= 8


def _node_ids(root) -> dict:
    return {id(node): i for i, node in enumerate(walk(root).nodes)}


def test_clicking_a_value_shows_its_value_and_gradient_and_the_path_view_products(open_page):
    """A scalar graph: the products are exact derivatives, the path view's numbers bit for bit."""
    rng = np.random.default_rng(0)
    h0 = Value(0.5, name="h0")
    w, u = Value(0.9, name="w"), Value(0.4, name="u")
    h, states = h0, [h0]
    for t in range(1, 5):
        with tg.scope(f"t={t}"):
            h = (w * h + u * float(rng.normal())).tanh()
        h.name = f"h_{t}"
        states.append(h)
    loss = h * h
    loss.name = "loss"
    loss.backward()
    ids, exported = _node_ids(loss), graph_dict(loss, data_limit=16)
    tab = open_page(explore(loss, states))
    tab.click("#expand-all")
    tab.click(f"[data-node='{ids[id(w)]}']")
    _shot(tab, "op_view_path_from_w")
    node = exported["nodes"][ids[id(w)]]
    assert tab.inner_text("#info [data-key=name]").endswith("w")
    assert _number(tab, "#info [data-key=data_value] .num") == node["data"]
    assert _number(tab, "#info [data-key=grad_value] .num") == node["grad"]
    assert _number(tab, "#info [data-key=grad_norm] .num") == node["grad_summary"]["norm"]
    products, exact, _, _ = path_products(walk(loss), w)
    assert exact
    shown = dict(tab.eval_on_selector_all("text.product", "els => els.map(e => [+e.parentNode.dataset.node, e.dataset.product])"))
    expected = {ids[id(n)]: v for n, v in products.items()}
    assert shown.keys() == expected.keys(), "every value on a path from w, and no other, is highlighted"
    for i, value in expected.items():
        assert float(shown[i]) == value
    assert float(shown[ids[id(loss)]]) == pytest.approx(float(w.grad), rel=1e-12), "and on the loss, dL/dw"


def test_on_a_tensor_graph_the_path_numbers_are_the_path_views_bounds_and_exact_norm(open_page):
    loss, states, model = build_model("rnn", 3, 3)
    ids = _node_ids(loss)
    tab = open_page(explore(loss, states))
    tab.click("#expand-all")
    tab.click(f"[data-node='{ids[id(model.weight_hh)]}']")
    products, exact, _, _ = path_products(walk(loss), model.weight_hh)
    assert not exact
    shown = dict(tab.eval_on_selector_all("text.product", "els => els.map(e => [+e.parentNode.dataset.node, e.dataset.product])"))
    for node, value in products.items():
        if node is loss:
            assert float(shown[ids[id(node)]]) == exact_norm(loss, model.weight_hh)
        elif node is not model.weight_hh:
            assert float(shown[ids[id(node)]]) == value
    assert "‖∂/∂weight_hh‖ =" in tab.inner_text("#info [data-key=at_output]")


def test_a_hundred_step_lstm_opens_collapsed_and_a_step_opens_on_a_click(open_page, tmp_path):
    loss, states, _ = build_model("lstm", 100, 16)
    page = explore(loss, states)
    html = page.html()
    assert len(html.encode("utf-8")) <= 10_000_000, "at most 10 MB"
    started = time.perf_counter()
    tab = open_page(page)
    opened = time.perf_counter() - started
    ready = int(tab.get_attribute("body", "data-ready-ms")) / 1000
    print(f"\n100-step LSTM (hidden 16): {len(html.encode('utf-8')) / 1e6:.2f} MB, drawn {ready:.2f} s after "
          f"navigation began ({opened:.2f} s from the call to open it)")
    _shot(tab, "lstm100_ops")
    assert tab.locator("g.step").count() == 100
    closed = tab.locator("g.node").count()
    assert closed < 40, "only what lies outside the steps is drawn value by value"
    tab.click("#fit")  # the whole unroll on the screen, each step a small box
    tab.click("[data-step='50']")
    per_step = len([n for n in graph_dict(loss)["nodes"] if n["time_step"] == 50])
    assert tab.locator("g.node").count() == closed + per_step
    _shot(tab, "lstm100_step50_open")
    tab.click("[data-step='50'] rect:nth-child(3)")  # the open box's header closes it
    assert tab.locator("g.node").count() == closed
    # the edge between two closed steps carries the step view's gain
    rows = diagnostics.steps(loss, states)
    tab.hover("path.hit[data-joined='49>50']", force=True)
    assert _number(tab, "#tip [data-key=gain] .num") == rows[50].gain
    assert _number(tab, "#tip [data-key=bound] .num") == rows[50].bound


def test_pan_and_zoom_move_the_drawing(open_page):
    loss, states, _ = build_model("lstm", 5, 3)
    tab = open_page(explore(loss, states))
    before = tab.get_attribute("#world", "transform")
    tab.mouse.move(500, 400)
    tab.mouse.wheel(0, -400)
    zoomed = tab.get_attribute("#world", "transform")
    assert zoomed != before and float(zoomed.split("scale(")[1].rstrip(")")) > float(before.split("scale(")[1].rstrip(")"))
    tab.mouse.move(600, 700)
    tab.mouse.down()
    tab.mouse.move(400, 650, steps=5)
    tab.mouse.up()
    panned = tab.get_attribute("#world", "transform")
    assert panned.split("scale(")[1] == zoomed.split("scale(")[1] and panned != zoomed


def test_the_step_view_shows_diagnostics_steps(open_page):
    loss, states, _ = build_model("lstm", 30, 4, clip=0.05)
    rows = diagnostics.steps(loss, states)
    tab = open_page(explore(loss, states, view="steps"))
    _shot(tab, "step_view")
    norms = dict(tab.eval_on_selector_all("g.snode", "els => els.map(e => [+e.dataset.state, e.dataset.norm])"))
    assert len(norms) == 31
    for row in rows:
        assert (None if norms[row.t] == "–" else float(norms[row.t])) == row.grad_norm
    tab.click("#fit")
    for t in (1, 13, 26, 30):
        tab.hover(f"path.hit[data-step-edge='{t}']", force=True)
        assert tab.inner_text("#tip b").startswith(f"step {t}:")
        assert _number(tab, "#tip [data-key=gain] .num") == rows[t].gain
        assert _number(tab, "#tip [data-key=bound] .num") == rows[t].bound
        assert _number(tab, "#tip [data-key=contribution] .num") == rows[t].contribution
    tab.click("g.snode[data-state='7']")
    assert _number(tab, "#info [data-key=grad_norm] .num") == rows[7].grad_norm
    fired = [r for r in rows if r.clip is not None and r.clip.fired]
    assert fired, "the clip hook fired near the loss"
    tab.click(f"g.snode[data-state='{fired[-1].t}']")
    before, after = tab.inner_text("#info [data-key=clip] td:last-child").split(" (")[0].split(" → ")
    assert (float(before), float(after)) == (fired[-1].clip.norm_before, fired[-1].clip.norm_after)
    assert tab.inner_text("#info [data-key=clip]").endswith("(fired)")


def test_the_switch_goes_between_op_step_and_lag_views(open_page):
    cell = nn.RNNCell(2, 3, rng=0)
    outputs, states = nn.RNN(cell)(np.random.default_rng(0).normal(size=(6, 1, 2)), return_states=True)
    losses = [(h * h).sum() for h in outputs]
    loss = losses[0]
    for term in losses[1:]:
        loss = loss + term
    loss.backward()
    tab = open_page(explore(loss, states, losses=losses))
    for view, drawn in (("steps", "g.snode"), ("lags", "rect[data-cell]"), ("ops", "g.step")):
        tab.click(f"[data-view='{view}']")
        assert tab.locator(drawn).count() > 0
        assert tab.get_attribute(f"[data-view='{view}']", "class") == "on"
    tab.click("[data-view='lags']")
    _shot(tab, "lag_view")
    matrix = diagnostics.lags(losses, states)
    shares, kept = _shares(matrix)
    for r, k in ((0, 0), (3, 1), (5, 5), (5, 2)):
        tab.hover(f"rect[data-cell='{r},{k}']", force=True)
        assert _number(tab, "#tip [data-key=share] .num") == shares[r, k]
        assert _number(tab, "#tip [data-key=norm] .num") == matrix[kept[r], k]
    reach = diagnostics.reach(matrix)
    tab.hover("rect[data-lag='2']", force=True)
    assert _number(tab, "#tip [data-key=reach] .num") == reach[2]


def test_search_finds_a_value_by_name_and_opens_its_step(open_page):
    loss, states, _ = build_model("lstm", 20, 3)
    ids = _node_ids(loss)
    tab = open_page(explore(loss, states))
    tab.fill("#search", "h_17")
    assert tab.locator("#results button.result").count() == 1
    tab.click("#results button.result")
    target = ids[id(states[17][0])]
    assert tab.locator(f"g.node[data-node='{target}']").count() == 1, "its step opened"
    assert "selected" in tab.get_attribute(f"g.node[data-node='{target}']", "class")
    assert tab.inner_text("#info [data-key=name]").endswith("h_17")
    assert "match" in tab.get_attribute(f"g.node[data-node='{target}']", "class")
    _shot(tab, "search_h17")
    assert tab.locator("text.product").count() > 0
    tab.keyboard.press("Escape")
    assert tab.locator("text.product").count() == 0, "Escape ends the highlighted paths"
    tab.fill("#search", "h_1")  # h_1 and h_10 ... h_19 match: the exact name comes first
    assert tab.inner_text("#results button.result >> nth=0").startswith("h_1 ")


def test_a_monitor_history_plays_as_a_filmstrip_of_the_step_view(open_page):
    cell = nn.RNNCell(2, 4, rng=0)
    monitor, optimizer = Monitor(cell), SGD(cell.parameters(), lr=0.5)
    rng = np.random.default_rng(1)
    for _ in range(6):
        outputs, states = nn.RNN(cell)(rng.normal(size=(8, 1, 2)), return_states=True)
        loss = (outputs[-1] * outputs[-1]).sum()
        optimizer.zero_grad()
        loss.backward()
        monitor.after_backward(loss, states)
        optimizer.step()
        monitor.after_step()
    outputs, states = nn.RNN(cell)(rng.normal(size=(8, 1, 2)), return_states=True)  # the trained weights' graph
    loss = (outputs[-1] * outputs[-1]).sum()
    loss.backward()
    tab = open_page(explore(loss, states, monitor=monitor, view="steps"))
    slider = tab.locator("#frame")
    assert slider.get_attribute("max") == "6"
    for frame in (0, 3, 5):
        slider.fill(str(frame))
        norms = tab.eval_on_selector_all("g.snode", "els => els.map(e => e.dataset.norm)")
        assert [float(n) for n in norms] == monitor.step_grad_norms[frame]
        assert f"iteration {frame}" in tab.inner_text("#caption")
    _shot(tab, "filmstrip_frame5")
    slider.fill("6")
    assert "iteration" not in tab.inner_text("#frame-label")


@pytest.mark.parametrize("text", [*HOSTILE, "</script><script>document.body.dataset.owned = 1</script>"],
                         ids=[f"hostile{k}" for k in range(len(HOSTILE) + 1)])
def test_hostile_names_stay_text_in_the_browser(open_page, text):
    loss, states, _ = build_model("rnn", 2, 2)
    loss.name = text
    states[1].name = text
    tab = open_page(explore(loss, states, title=text))
    same = "(t, s) => t === s"
    assert tab.evaluate(f"({same})(document.getElementById('title').textContent, TG.DATA.title)")
    assert tab.evaluate("TG.DATA.title.length") == len(text.encode("utf-16-le", "surrogatepass")) // 2
    assert tab.evaluate("document.querySelectorAll('script').length") == 2
    assert tab.evaluate("document.body.dataset.owned") is None
    tags = set(tab.evaluate("[...document.querySelectorAll('body *')].map(e => e.tagName.toLowerCase())"))
    assert tags <= {"div", "h1", "h2", "button", "input", "span", "label", "svg", "g", "rect", "text", "path",
                    "title", "p", "script", "table", "tr", "td", "b", "line"}
    tab.click(f"[data-node='{len(walk(loss).nodes) - 1}']")
    assert tab.evaluate("document.querySelector('#info [data-key=name] td:last-child').textContent === TG.DATA.title")
    if "\ud800" not in text:
        assert tab.inner_text("#title") == text.replace("\n", " ").strip() or tab.evaluate(
            "document.getElementById('title').textContent") == text


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
def test_a_picture_as_a_page_pans_zooms_and_finds_labels(open_page):
    loss, states, _ = build_model("rnn", 2, 2)
    tab = open_page(picture_page(draw_graph(loss, title="picture")))
    assert tab.locator("#world svg g.node").count() > 5
    tab.mouse.move(500, 400)
    before = tab.get_attribute("#world", "transform")
    tab.mouse.wheel(0, -300)
    assert tab.get_attribute("#world", "transform") != before
    tab.fill("#search", "loss")
    assert tab.locator("#results button.result").count() >= 1
    _shot(tab, "picture_page")


def test_two_unrolls_get_boxes_of_their_own(open_page):
    """Steps are told apart by their unroll's scope too: an encoder's t = 1 is not a decoder's."""
    rng = np.random.default_rng(0)
    encoder, decoder = nn.RNNCell(2, 3, rng=0), nn.RNNCell(3, 3, rng=1)
    with tg.scope("encoder"):
        outputs, _ = nn.RNN(encoder)(rng.normal(size=(3, 1, 2)), return_states=True)
    with tg.scope("decoder"):
        decoded, _ = nn.RNN(decoder)(np.stack([o.data for o in outputs]), return_states=True)
    loss = (decoded[-1] * outputs[-1]).sum()
    loss.backward()
    tab = open_page(explore(loss))
    names = tab.eval_on_selector_all("g.step", "els => els.map(e => e.dataset.step)")
    assert names == [f"encoder/t={t}" for t in (1, 2, 3)] + [f"decoder/t={t}" for t in (1, 2, 3)]
    assert tab.get_attribute("[data-view='steps']", "disabled") is not None, "no states given: no step view"
    tab.click("[data-step='decoder/t=2']")
    assert "decoder · t = 2" in tab.text_content("[data-step='decoder/t=2']")


def test_from_h0_the_loss_shows_the_exact_norm_as_the_path_view_does(open_page):
    loss, states, _ = build_model("lstm", 4, 3)
    h0 = nn.hidden_of(states[0])
    tab = open_page(explore(loss, states, source=h0))
    assert tab.inner_text("#info [data-key=name]").endswith("h0")
    assert "‖∂/∂h0‖ =" in tab.inner_text("#info [data-key=at_output]")
    tab.click("#expand-all")
    tab.click(f"[data-node='{_node_ids(loss)[id(h0)]}']")
    shown = dict(tab.eval_on_selector_all("text.product", "els => els.map(e => [+e.parentNode.dataset.node, e.dataset.product])"))
    assert float(shown[_node_ids(loss)[id(loss)]]) == exact_norm(loss, h0)
