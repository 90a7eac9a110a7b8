"""Pictures of recorded graphs, for seeing backpropagation through time.

- ``draw_graph(root)``: the op view, every value and op, each edge labelled by its local gradient;
- ``draw_path(root, source)``: the op view with the paths from ``source`` highlighted and the running
  product of local gradients along them;
- ``draw_steps(loss, states)`` / ``compare_steps(runs)``: one node per state (or per layer, with
  ``axis="layer"``), each edge labelled with what that step did to the gradient (its gain, the bound
  beside it), each node shaded by the size of the gradient that reached it (tinygrad_rnn.diagnostics.steps);
- ``draw_lags(losses, states)``: how far each loss's gradient reaches back (a heatmap over loss and
  state) and the reach curve over the lag (tinygrad_rnn.diagnostics.lags), for a loss at every step;
- ``explore(loss, states)``: one self-contained HTML page to explore the unrolled graph in a browser
  (pan, zoom, time steps opened on click, numbers on hover, the op, step and lag views);
- ``render(picture, "out.svg")``: svg, png, pdf or html by suffix; ``to_json(root)``: nodes and edges for
  other tools.

Every view returns a ``graphviz.Digraph``, which Jupyter shows inline. Pictures read graphs only
through ``tinygrad_rnn.graph``; the engine never imports this package.
"""

from visualize.export import to_json
from visualize.lag_view import draw_lags
from visualize.op_view import MAX_NODES, GraphTooLarge, draw_graph
from visualize.page import explore
from visualize.path_view import draw_path
from visualize.render import render
from visualize.step_view import compare_steps, draw_steps

__all__ = [
    "draw_graph", "draw_path", "draw_steps", "compare_steps", "draw_lags", "explore", "render", "to_json",
    "GraphTooLarge", "MAX_NODES",
]
