"""Lesson 8, fewer layers: deep feed-forward sigmoid nets of 3, 10 and 20 layers, and the gradient norm
at each layer.

Each net is ``depth`` Linear(32, 32) layers with PyTorch's default initialisation, a sigmoid after every
one, and a linear read-out; the loss is the mean squared error to random targets on a batch of 64. After
one backward pass we read ||dL/dW_l|| for each layer's weight and ||dL/da_l|| for each layer's output
a_l: the same chain rule as backpropagation through time, with layers in place of time steps (and a
different weight at each layer). The step view draws it so, ``compare_steps(..., axis="layer")``.

Run: python examples/lessons/08_depth.py [--quick] [--out DIR]
"""

from __future__ import annotations

import lessons_common as lc
import numpy as np

from tinygrad_rnn import Value, nn
from visualize import compare_steps

WIDTH, BATCH = 32, 64


def deep_net(depth: int, seed: int = 0, he_init: bool = False):
    """Layers [Linear(32, 32)] * depth and a read-out Linear(32, 1), seeded; ``he_init`` redraws the
    weights N(0, 2/fan_in) (``kaiming_normal_``), the scale that keeps a ReLU layer's gradient whole."""
    rng = np.random.default_rng(seed)
    layers = [nn.Linear(WIDTH, WIDTH, rng=rng) for _ in range(depth)]
    if he_init:
        for layer in layers:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", rng=rng)
    return layers, nn.Linear(WIDTH, 1, rng=rng)


def gradients_per_layer(depth: int, activation: str = "sigmoid", seed: int = 0, he_init: bool = False) -> dict:
    """One forward and backward pass; ||dL/dW_l|| and ||dL/da_l|| for l = 1..depth, and the outputs
    [a_0, a_1, ..., a_depth] (a_0 the input) for pictures."""
    layers, readout = deep_net(depth, seed, he_init)
    rng = np.random.default_rng(100 + seed)
    a = Value(rng.normal(size=(BATCH, WIDTH)), name="a_0")
    outputs = [a]
    for layer in layers:
        a = getattr(layer(a), activation)()
        outputs.append(a)
    loss = nn.mse_loss(readout(a), rng.normal(size=(BATCH, 1)))
    loss.backward()
    return {"loss": loss, "outputs": outputs,
            "weight": [float(np.linalg.norm(layer.weight.grad)) for layer in layers],
            "output": [float(np.linalg.norm(out.grad)) for out in outputs[1:]]}


def main(quick: bool = False, out=lc.DEFAULT_OUT) -> dict:
    timer = lc.Timer()
    depths = (3, 10) if quick else (3, 10, 20)
    runs = {depth: gradients_per_layer(depth) for depth in depths}
    tanh = gradients_per_layer(depths[-1], "tanh")
    relu = gradients_per_layer(depths[-1], "relu")
    relu_he = gradients_per_layer(depths[-1], "relu", he_init=True)
    paths = _plot(runs, {"tanh": tanh, "ReLU": relu, "ReLU, He init": relu_he}, out)
    # The step view with layers in place of time steps: each edge is what one layer did to the gradient.
    picture = compare_steps({f"{depth} sigmoid layers": (run["loss"], run["outputs"]) for depth, run in runs.items()},
                            axis="layer", per_row=max(depths),
                            title="The step view over layers: the gradient on its way back through each net")
    paths += lc.save_graph(picture, out, "08_depth_layers")

    sentences = []
    for depth, run in runs.items():
        w = run["weight"]
        sentences.append(f"{depth} sigmoid layers: ||dL/dW|| is {w[-1]:.3g} at the last layer and {w[0]:.3g} at "
                         f"the first, a ratio of {w[0] / w[-1]:.2g}.")
    deepest = runs[depths[-1]]["output"]
    per_layer = (deepest[0] / deepest[-1]) ** (1 / (len(deepest) - 1))
    lc.say(
        " ".join(sentences),
        f"Going back one layer multiplies the gradient by diag(sigmoid'(z)) W^T; sigmoid' is at most 1/4 and "
        f"these weights are small, so in the {depths[-1]}-layer net the gradient loses a factor of about "
        f"{1 / per_layer:.2g} per layer: the first layers receive almost nothing and barely learn.",
        f"With tanh (derivative up to 1) the same {depths[-1]} layers give a first/last ratio of "
        f"{tanh['weight'][0] / tanh['weight'][-1]:.2g}, with ReLU {relu['weight'][0] / relu['weight'][-1]:.2g}: "
        "better, but this initialisation still shrinks every layer's signal. ReLU with He's initialisation "
        f"(variance 2/fan_in) gives {relu_he['weight'][0] / relu_he['weight'][-1]:.2g}. The remedies for deep "
        "nets are the remedies for long sequences: fewer layers (shorter paths), non-saturating "
        "activations, and an initialisation that keeps each layer's factor near 1.",
    )
    lc.wrote(paths)
    print(f"({timer})")
    return {"runs": runs, "tanh": tanh, "relu": relu, "relu_he": relu_he, "paths": paths}


def _plot(runs, others, out) -> list:
    with lc.plot_style():
        fig = lc.figure(figsize=(11, 4))
        weights, signals = fig.subplots(1, 2)
        colours = ("tab:green", "tab:orange", "tab:red")
        for colour, (depth, run) in zip(colours, runs.items()):
            layers = np.arange(1, depth + 1)
            weights.semilogy(layers, run["weight"], ".-", color=colour, label=f"{depth} layers, sigmoid")
            signals.semilogy(layers, run["output"], ".-", color=colour, label=f"{depth} layers, sigmoid")
        deepest = max(runs)
        layers = np.arange(1, deepest + 1)
        for (name, run), line in zip(others.items(), ("--", ":", "-.")):
            weights.semilogy(layers, run["weight"], line, color="grey", label=f"{deepest} layers, {name}")
            signals.semilogy(layers, run["output"], line, color="grey", label=f"{deepest} layers, {name}")
        weights.set_title("gradient of each layer's weight")
        weights.set_ylabel("‖dL/dW_l‖")
        signals.set_title("gradient reaching each layer's output")
        signals.set_ylabel("‖dL/da_l‖")
        for axes in (weights, signals):
            axes.set_xlabel("layer l (1 is next to the input)")
            axes.legend(fontsize=7)
        fig.suptitle(f"Deep feed-forward nets, width {WIDTH}, PyTorch's default init unless marked: "
                     "the gradient per layer")
        return lc.save_figure(fig, out, "08_depth")


if __name__ == "__main__":
    main(**lc.command_line(__doc__))
