"""The cell zoo side by side: how far back each cell's gradient reaches at initialisation, and its
PyTorch twin.

Shows: seven published cells (examples/cells/) written as plain Modules of Values, unrolled by nn.RNN
over 60 steps with one loss at the end; diagnostics.steps gives each step's gain, and their product
says how much of the gradient reaches the first step. With PyTorch installed, tinygrad_rnn.to_torch
carries each cell over and the two agree to rounding.
Run: python examples/cell_zoo.py
"""

import numpy as np
from cells import ZOO, chrono_init

import tinygrad_rnn as tg
from tinygrad_rnn import diagnostics, nn

STEPS, BATCH, INPUT, HIDDEN = 60, 8, 2, 16


def torch_difference(cell, x) -> str:
    """The largest difference between the cell's step and its PyTorch twin's, or why there is none."""
    try:
        import torch
    except ImportError:
        return "(torch not installed)"
    twin = tg.to_torch(cell)
    ours = nn.hidden_of(cell(tg.Value(x), cell.initial_state(BATCH))).data
    theirs = nn.hidden_of(twin(torch.tensor(x)))
    return f"{np.max(np.abs(theirs.detach().numpy() - ours)):.0e}"


if __name__ == "__main__":
    x = np.random.default_rng(0).normal(size=(STEPS, BATCH, INPUT))
    cells = {name: make(INPUT, HIDDEN, rng=0) for name, make in ZOO.items()}
    cells["JANET, chrono"] = chrono_init(ZOO["JANET"](INPUT, HIDDEN, rng=0), t_max=STEPS, rng=1)
    print(f"{'cell':<18} {'gain/step':>9} {'reached':>9} {'verdict':>10} {'vs torch':>9}")
    for name, cell in cells.items():
        outputs, states = nn.RNN(cell)(x, return_states=True)
        loss = outputs[-1].sum()  # one loss at the last step: how much of it reaches step 1?
        loss.backward()
        rows = diagnostics.steps(loss, states)
        factor, first, last = diagnostics.gradient_factor(rows)
        print(f"{name:<18} {factor ** (1 / (last - first)):>9.3f} {factor:>9.1e} {diagnostics.verdict(rows):>10} "
              f"{torch_difference(cell, x[0]):>9}")
