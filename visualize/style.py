"""The look shared by every picture: one colour scale for "how much does this scale a gradient",
number formatting, label escaping and the legend.

Colour scale. A number x (a local derivative, a Jacobian norm, a gain, a gradient norm) is placed on
s = log10|x| / decades, clipped to [-1, 1]: s < 0 shrinks a gradient (cool, blue), s = 0 leaves it
alone (grey), s > 0 amplifies it (warm, red). Pen width grows with s, so a vanishing chain is drawn
with ever thinner, bluer edges. Colour uses sign(s) sqrt|s| so that a factor of 0.5 is already
visibly blue: the eye should catch every shrinking edge, not only the extreme ones.

Node shading for absolute sizes (a gradient norm is a size, not a factor) uses a separate,
one-hue scale: light for small, dark for large, on log10 between two decades the legend names.

Escaping. Every label is an HTML-like label built here from escaped text, and every tooltip is an
escString escaped here, so a user's name (quotes, <, >, braces, backslashes, newlines) can neither
break the DOT text nor add attributes. Characters no label can hold (control characters, lone
surrogates, non-characters) are replaced by U+FFFD, never passed on to crash Graphviz or the UTF-8
encoder. Node identifiers are ours ("n17"), never user text.
"""

from __future__ import annotations

import html
import math
import re

import graphviz

__all__ = [
    "FONT", "GREY", "COOL", "WARM", "NONFINITE", "scale", "colour", "fill", "pen_width", "number", "text",
    "tooltip", "legend", "swatch_values",
]

FONT = "Helvetica"
MONO = "Courier"
GREY, COOL, WARM = (140, 140, 140), (33, 102, 172), (190, 30, 45)
WHITE = (255, 255, 255)
INK = "#303030"  # text colour: softer than black on slides
MUTED = "#7a7a7a"
COOL_TEXT = "#1f5f9e"
# A number that is not finite (nan or inf: a NaN or an overflow on the way back), drawn off every scale:
# a green no colour scale reaches (grey to blue or red, light to dark violet).
NONFINITE = "#1b9e4b"


def scale(x: float | None, decades: float = 2.0) -> float:
    """log10|x| / decades, clipped to [-1, 1]; 0 for a missing number (drawn neutral), -1 for 0."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return 0.0
    magnitude = abs(float(x))
    if magnitude == 0.0:
        return -1.0
    if math.isinf(magnitude):
        return 1.0
    return max(-1.0, min(1.0, math.log10(magnitude) / decades))


def _mix(a: tuple, b: tuple, t: float) -> str:
    r, g, b_ = (round(a[i] + (b[i] - a[i]) * t) for i in range(3))
    return f"#{r:02x}{g:02x}{b_:02x}"


def colour(x: float | None, decades: float = 2.0, power: float = 0.5) -> str:
    """Cool below 1, grey about 1, warm above 1 (hex #rrggbb). The strength is |scale|^power: the
    default square root makes small factors visible; ``power=1`` spreads a scale of many decades
    evenly (the lag view's)."""
    s = scale(x, decades)
    strength = abs(s) ** power
    return _mix(GREY, COOL if s < 0 else WARM, strength)


def fill(x: float | None, decades: float = 2.0, lightness: float = 0.6) -> str:
    """The colour of ``x`` washed towards white, for node backgrounds that text sits on."""
    s = scale(x, decades)
    strength = math.sqrt(abs(s))
    base = (235, 235, 235)
    end = _mix(base, COOL if s < 0 else WARM, 1.0 - lightness)
    end_rgb = tuple(int(end[i : i + 2], 16) for i in (1, 3, 5))
    return _mix(base, end_rgb, strength)


def washed(hex_colour: str, amount: float = 0.6) -> str:
    """``hex_colour`` mixed ``amount`` of the way to white: the same hue, pale (a number resting on
    little evidence)."""
    rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return _mix(rgb, WHITE, amount)


def pen_width(x: float | None, decades: float = 2.0) -> str:
    """From 0.6 (shrinks by 10^decades or more) through 1.6 (about 1) to 4 (amplifies as much)."""
    s = scale(x, decades)
    width = 1.6 + (2.4 * s if s > 0 else 1.0 * s)
    return f"{width:.2f}"


def number(x: float | None, digits: int = 3) -> str:
    """A short, exact-enough rendering of a number: ``digits`` significant digits."""
    if x is None:
        return "–"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0.0:
        return "0"
    return f"{x:.{digits}g}"


# Characters XML (and so Graphviz's HTML-like labels) cannot hold, or that cannot be encoded at all:
# control characters (tab and newline aside), C1 controls, lone surrogates, U+FFFE and U+FFFF.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean(value, limit: int) -> str:
    """``str(value)`` with unsafe characters replaced by U+FFFD, line ends made \\n, and text past
    ``limit`` characters cut with an ellipsis."""
    raw = _UNSAFE.sub("\ufffd", str(value).replace("\r\n", "\n").replace("\r", "\n"))
    return raw if len(raw) <= limit else raw[: limit - 1] + "…"


def text(value, limit: int = 60) -> str:
    """User text made safe for an HTML-like label: entities for & < > " ', unsafe characters
    replaced, newlines and tabs shown as visible marks (↵, ⇥), long text cut with an ellipsis.

    Graphviz (2.43) drops a label's characters below a space, and refuses a piece of label text made
    only of them, or only of "]" (its XML reader holds "]" back in case "]]>" follows): a syntax
    error, and no picture. So a tab is drawn as ⇥, and text that is all "]" is written as &#93;."""
    escaped = html.escape(clean(value, limit), quote=True).replace("\n", "↵").replace("\t", "⇥")
    return escaped if escaped.strip("]") else escaped.replace("]", "&#93;")


def tooltip(value, limit: int = 400) -> graphviz.quoting.NoHtml:
    """User text made safe for an escString attribute (tooltips): backslashes doubled, newlines as
    Graphviz's \\n, quotes escaped, unsafe characters replaced; never read as an HTML label."""
    raw = clean(value, limit)
    raw = raw.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return graphviz.nohtml(raw)


def html_label(body: str) -> str:
    """Wrap already-escaped markup as an HTML-like label (graphviz passes <...> through)."""
    return f"<{body}>"


def swatch_values(decades: float) -> list[float]:
    """The numbers the legend shows for a scale that saturates at 10^±decades."""
    if decades <= 1:
        return [0.1, 0.3, 0.6, 1.0, 1.5, 3.0, 10.0]
    top = 10.0**decades
    return [1 / top, 0.1, 0.5, 1.0, 2.0, 10.0, top]


def _swatch_label(x: float) -> str:
    if x >= 1000 or x < 0.001:
        exponent = round(math.log10(x))
        return f"10<SUP>{exponent}</SUP>".replace("-", "−")
    return f"{x:g}"


def legend_row(caption: str, decades: float, fill_cells: bool = False) -> str:
    """One legend row: a caption, then swatches from shrinking to amplifying (already escaped)."""
    cells = []
    for x in swatch_values(decades):
        bg = fill(x, decades) if fill_cells else colour(x, decades)
        ink = INK if fill_cells or abs(scale(x, decades)) < 0.3 else "white"
        cells.append(
            f'<TD BGCOLOR="{bg}" WIDTH="38" HEIGHT="18"><FONT COLOR="{ink}" POINT-SIZE="9">×{_swatch_label(x)}'
            "</FONT></TD>"
        )
    return (
        f'<TR><TD ALIGN="RIGHT"><FONT POINT-SIZE="10">{caption}</FONT></TD>'
        f'<TD><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="1"><TR>{"".join(cells)}'
        "</TR></TABLE></TD></TR>"
    )


MAGNITUDE_LIGHT, MAGNITUDE_DARK = (247, 244, 251), (136, 110, 186)  # violet, as gradients are drawn


def magnitude_fill(x: float | None, low: int, high: int) -> str:
    """Shade for an absolute size ``x``: light at 10^low or below, dark at 10^high or above, on
    log10 in between; white for None, the lightest shade for 0."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "#ffffff"
    if x == 0.0:
        return _mix(MAGNITUDE_LIGHT, MAGNITUDE_DARK, 0.0)
    position = (math.log10(abs(x)) - low) / max(high - low, 1) if math.isfinite(x) else 1.0
    return _mix(MAGNITUDE_LIGHT, MAGNITUDE_DARK, min(1.0, max(0.0, position)))


def magnitude_range(values) -> tuple[int, int]:
    """The decades (low, high) a magnitude scale spans for ``values`` (positive finite ones),
    at least two decades wide."""
    logs = [math.log10(v) for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not logs:
        return -1, 1
    low, high = math.floor(min(logs)), math.ceil(max(logs))
    return (low, max(high, low + 2))


def magnitude_row(caption: str, low: int, high: int) -> str:
    """A legend row of absolute sizes: swatches from 10^low to 10^high, labelled with the values."""
    step = max(1, math.ceil((high - low) / 6))  # at most seven swatches, evenly spaced in decades
    exponents = list(range(high, low - 1, -step))[::-1]
    cells = "".join(
        f'<TD BGCOLOR="{magnitude_fill(10.0**e, low, high)}" WIDTH="38" HEIGHT="18"><FONT COLOR="{INK}" '
        f'POINT-SIZE="9">{_swatch_label(10.0**e)}</FONT></TD>' for e in exponents
    )
    return (
        f'<TR><TD ALIGN="RIGHT"><FONT POINT-SIZE="10">{caption}</FONT></TD>'
        f'<TD><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="1"><TR>{cells}</TR></TABLE></TD></TR>'
    )


def legend(title: str | None, rows: list[str], notes: list[str], subtitle: str = "") -> str:
    """The graph label: an optional title (and a plain-text line under it), swatch rows (from
    ``legend_row``), and lines of key."""
    parts = ['<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2">']
    if title:
        parts.append(f'<TR><TD COLSPAN="2"><FONT POINT-SIZE="14"><B>{text(title, 240)}</B></FONT></TD></TR>')
    if subtitle:
        parts.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT POINT-SIZE="11">{text(subtitle, 300)}</FONT></TD></TR>')
    parts.extend(rows)
    for note in notes:
        parts.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="{MUTED}">{note}</FONT></TD></TR>')
    parts.append("</TABLE>")
    return html_label("".join(parts))


INSTALL_HINT = "apt-get install graphviz (Debian/Ubuntu) or brew install graphviz (macOS)"


class Picture(graphviz.Digraph):
    """A Digraph that Jupyter shows inline as a picture; where Graphviz's ``dot`` program is missing,
    as one line saying how to install it (graphviz's own display raises an error there)."""

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        try:
            return super()._repr_mimebundle_(include, exclude, **kwargs)
        except graphviz.ExecutableNotFound:
            return {"text/plain": f"(no picture: Graphviz's dot program is missing; install it with {INSTALL_HINT}, "
                                  "or write the .dot source with visualize.render(picture, 'x.dot'))"}


def base_digraph(name: str, rankdir: str = "LR") -> graphviz.Digraph:
    """A Digraph with the house style: left to right, Helvetica, compact spacing (a ``Picture``:
    shown inline in Jupyter, or as one line where ``dot`` is missing)."""
    dot = Picture(name)
    dot.attr(
        "graph", rankdir=rankdir, fontname=FONT, fontcolor=INK, bgcolor="white", newrank="true",
        nodesep="0.16", ranksep="0.2", labelloc="b", labeljust="l", pad="0.25",
    )
    dot.attr("node", fontname=FONT, fontsize="10", fontcolor=INK, color="#9a9a9a", penwidth="1")
    dot.attr("edge", fontname=FONT, fontsize="9", arrowsize="0.6")
    return dot
