"""Helpers shared by the picture tests: a small scalar RNN, a DOT lexer, and Graphviz's own reading
of a picture (``dot -Tjson``) reduced to what could betray injected text: its objects and edges and
the attribute names each carries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import tinygrad_rnn as tg
from tinygrad_rnn import Value

HAS_DOT = shutil.which("dot") is not None


def scalar_rnn(steps=4, w=0.9, u=0.5, b=0.1, h0=0.0, inputs=(1.0, -0.5, 0.3, 0.8, -0.2, 0.6)):
    """h_t = tanh(w h_{t-1} + u x_t + b), loss = (h_T - 0.5)^2, each step in scope t=<k>."""
    w, u, b = Value(w, name="w_hh"), Value(u, name="w_ih"), Value(b, name="b")
    h = Value(h0, requires_grad=False, name="h_0")
    states = [h]
    for t in range(1, steps + 1):
        x = Value(inputs[(t - 1) % len(inputs)], requires_grad=False, name=f"x_{t}")
        with tg.scope(f"t={t}"):
            h = (w * h + u * x + b).tanh()
        h.name = f"h_{t}"
        states.append(h)
    loss = (h - 0.5) ** 2
    loss.name = "loss"
    return loss, states, (w, u, b)


def edge_labels(source: str) -> list[tuple[int, int, str]]:
    """(parent index, child index, label markup) of every labelled data edge (value -> op node)."""
    found = re.findall(r"^\s*v(\d+)(?:_[tr]\d+)?\s*->\s*o(\d+)\s*\[label=<(.*?)>\s+\w+=", source, flags=re.M)
    return [(int(p), int(c), label) for p, c, label in found]


def dot_tokens(source: str) -> list[tuple[str, str]]:
    """A small DOT lexer: quoted strings (with backslash escapes), HTML strings (nested <>),
    identifiers and numerals, punctuation. Raises if a string or HTML label never closes."""
    tokens, i, n = [], 0, len(source)
    ident = re.compile(r"[A-Za-z_\x80-\uffff][\w\x80-\uffff]*|-?(?:\.\d+|\d+(?:\.\d*)?)")
    while i < n:
        c = source[i]
        if c.isspace():
            i += 1
        elif c == '"':
            j = i + 1
            while source[j] != '"':
                j += 2 if source[j] == "\\" else 1
            tokens.append(("string", source[i + 1 : j]))
            i = j + 1
        elif c == "<":
            depth, j = 0, i
            while True:
                depth += {"<": 1, ">": -1}.get(source[j], 0)
                j += 1
                if depth == 0:
                    break
            tokens.append(("html", source[i + 1 : j - 1]))
            i = j
        elif source.startswith("->", i):
            tokens.append(("punct", "->"))
            i += 2
        elif c in "{}[];=,":
            tokens.append(("punct", c))
            i += 1
        else:
            match = ident.match(source, i)
            assert match, f"unexpected character {c!r} at {i}: {source[i - 20 : i + 20]!r}"
            tokens.append(("id", match.group()))
            i = match.end()
    return tokens


def attribute_lists(tokens) -> dict[str, list[str]]:
    """For each node statement ``id [k=v ...]``, the attribute keys, in order."""
    found, i = {}, 0
    while i < len(tokens):
        if tokens[i][0] == "id" and i + 1 < len(tokens) and tokens[i + 1] == ("punct", "["):
            if i > 0 and tokens[i - 1] == ("punct", "->"):
                i += 1
                continue
            keys, j = [], i + 2
            while tokens[j] != ("punct", "]"):
                if tokens[j + 1] == ("punct", "="):
                    keys.append(tokens[j][1])
                    j += 3
                else:
                    j += 1
            found.setdefault(tokens[i][1], keys)
            i = j
        i += 1
    return found


def cluster_members(source: str) -> list[tuple[str, set]]:
    """(label markup, node ids) of every cluster, nested ones too, in the order they open; a
    cluster's ids include those of the clusters inside it."""
    clusters, open_ = [], []
    for line in source.splitlines():
        opened = re.match(r"\s*subgraph (cluster_\w+) \{", line)
        if opened:
            clusters.append(["", set()])
            open_.append(clusters[-1])
            continue
        if line.strip() == "}" and open_:
            open_.pop()
            continue
        if not open_:
            continue
        node = re.match(r"\s*(\w+) \[", line)
        label = re.search(r"(?:^|\s)label=<(.*?)>(?:\s+\w+=|$)", line)
        if label and not node and " -> " not in line and not open_[-1][0]:
            open_[-1][0] = label.group(1)
        if node and node.group(1) not in ("graph", "node", "edge"):
            for cluster in open_:
                cluster[1].add(node.group(1))
    return [(label, ids) for label, ids in clusters]


def dot_structure(source: str) -> dict:
    """What ``dot -Tjson`` makes of a picture: the number of objects (nodes and clusters) and edges,
    and the sorted attribute names of each, in order. Two pictures that differ only in their text
    have the same structure; text that broke out of its label would add an object or an attribute."""
    result = subprocess.run(["dot", "-Tjson"], input=source.encode("utf-8"), capture_output=True, check=True)
    layout = json.loads(result.stdout)
    skip = {"_draw_", "_ldraw_", "_hdraw_", "_tdraw_", "_hldraw_", "_tldraw_", "pos", "lp", "bb", "width", "height",
            "label", "xlabel", "tooltip", "labeltooltip", "lwidth", "lheight", "_gvid", "head", "tail", "nodes",
            "edges", "subgraphs"}

    def keys(item):
        return tuple(sorted(k for k in item if k not in skip))

    objects = [(o.get("name", "")[:7], keys(o)) for o in layout.get("objects", [])]
    edges = [keys(e) for e in layout.get("edges", [])]
    return {"objects": objects, "edges": edges, "graph": keys(layout)}
