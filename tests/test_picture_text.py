"""Text that reaches a picture: every text parameter of every view (value names, titles, scope names,
run names, state part names, node letters) is escaped for the label it lands in, and characters no
label can hold (control characters, lone surrogates) are replaced, never a crash. Checked against
Graphviz itself: ``dot -Tjson`` must read each picture made with hostile text as the same objects,
edges and attributes as the picture made with plain text."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from picture_helpers import HAS_DOT, dot_structure, dot_tokens

import tinygrad_rnn as tg
from tinygrad_rnn import Value, nn
from tinygrad_rnn.clip import clip_norm
from visualize import compare_steps, draw_graph, draw_path, draw_steps, style

HOSTILE = [
    'a "quoted" <b>bold</b> {brace} back\\slash\\ \n newline ] [color=red] ; } digraph { x -> y',
    "> ]; injected [label=<<B>x</B>>]; z [shape=star",
    "</FONT></TD></TR></TABLE>> color=red label=<",
    "lone surrogates \ud800 and \udfff, a pair 😀",
    "controls \x00\x07\x1b[31m\x7f\x85 and tab\tend",
    "entities &amp; &#60; &lt; <BR/> ]]><!-- \\N \\G \\L",
    "\ufffe\uffff non-characters",
    "x" * 500,
]


def _rnn_states(text: str, clip: bool = True):
    """An LSTM unrolled inside a scope named ``text``, its state parts named ``text``, after backward."""
    cell = nn.LSTMCell(2, 3, rng=0)
    with tg.scope(text):
        outputs, states = nn.RNN(cell, hidden_hook=clip_norm(0.01) if clip else None)(
            np.random.default_rng(0).normal(size=(4, 1, 2)), return_states=True)
    for h, c in states[1:]:
        h.name, c.name = text, text + " c"
    loss = outputs[-1].sum()
    loss.backward()
    return loss, states


def _pictures(text: str) -> dict:
    """Every view, with ``text`` in every text parameter it has."""
    x = Value(np.array([1.0, -2.0]), name=text)
    with tg.scope(text):  # a named scope that is not a time step: its own cluster
        y = (x * 2.0).tanh()
    y.name = text
    with tg.scope("t=1"), tg.scope(text):  # a scope inside a time step: a gate's caption
        z = (y * 3.0).sum()
    z.name = text
    z.backward()
    loss, states = _rnn_states(text)
    return {
        "op view": draw_graph(z, title=text).source,
        "op view, long unroll": draw_graph(loss, title=text, per_row=2).source,
        "path view": draw_path(z, x, title=text).source,
        "step view": draw_steps(loss, states, name=text, title=text).source,
        "step view, layers": draw_steps(loss, states, name=text, axis="layer", title=text).source,
        "compare": compare_steps({text: (loss, states, text), text + "2": (loss, states)}, title=text).source,
    }


@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{k}" for k in range(len(HOSTILE))])
def test_hostile_text_never_crashes_and_every_label_stays_well_formed(text):
    for view, source in _pictures(text).items():
        source.encode("utf-8")  # no lone surrogate reaches the encoder
        tokens = dot_tokens(source)
        braces = [t for kind, t in tokens if kind == "punct" and t in "{}"]
        assert braces.count("{") == braces.count("}"), view


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot is not installed")
@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{k}" for k in range(len(HOSTILE))])
def test_graphviz_reads_the_same_objects_and_attributes_with_hostile_text(text):
    plain = _pictures("plain")
    hostile = _pictures(text)
    for view in plain:
        assert dot_structure(hostile[view]) == dot_structure(plain[view]), view


def test_unsafe_characters_are_replaced_and_markup_is_shown_as_text():
    assert style.text("a\ud800b\x07c") == "a\ufffdb\ufffdc"
    assert style.text("<B>x</B>") == "&lt;B&gt;x&lt;/B&gt;"
    assert str(style.tooltip('say "\\N"\n')) == 'say \\"\\\\N\\"\\n'
    source = draw_steps(*_rnn_states("<b>h</b>", clip=False), name="<i>").source
    labels = [text for kind, text in dot_tokens(source) if kind == "html"]
    assert any("&lt;i&gt;" in label for label in labels) and not any("<i>" in label for label in labels)
    assert any("(&lt;b&gt;h&lt;/b&gt;_t, &lt;b&gt;h&lt;/b&gt; c_t)" in label for label in labels)


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=20))
def test_any_text_in_any_parameter_keeps_the_dot_text_whole(text):
    x = Value(1.5, name=text)
    y = (x * 2.0).tanh()
    y.name = text
    y.backward()
    for source in (draw_graph(y, title=text).source, draw_path(y, x, title=text).source,
                   draw_steps(y, [x, y], name=text, title=text).source):
        source.encode("utf-8")
        dot_tokens(source)
