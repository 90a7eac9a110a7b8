"""A zoo of published recurrent cells, each a plain ``nn.Module`` of a few lines of Values.

Each cell's docstring gives its paper and equations; ``forward(x, state) -> state`` writes them as
they stand, with no backward code, and ``nn.RNN(cell)`` unrolls any of them. tests/test_cell_zoo.py
checks each against one step written independently in numpy, and by central differences;
benchmarks/cells.py trains them on the adding problem; ``tinygrad_rnn.to_torch`` carries any of them
to PyTorch.

Import with the examples folder on the path (``python examples/...``, or ``sys.path``):
``from cells import JANETCell, chrono_init``.
"""

from cells.antisymmetric import GatedAntisymmetricCell
from cells.chrono import chrono_biases, chrono_init
from cells.indrnn import IndRNNCell
from cells.janet import JANETCell
from cells.lstm_variants import CIFGLSTMCell, PeepholeLSTMCell
from cells.mgu import MGUCell

__all__ = ["IndRNNCell", "MGUCell", "JANETCell", "GatedAntisymmetricCell", "PeepholeLSTMCell", "CIFGLSTMCell",
           "chrono_init", "chrono_biases", "ZOO"]

# Every cell of the zoo, by the name tables print: (input_size, hidden_size, rng) -> cell.
ZOO = {
    "IndRNN": IndRNNCell,
    "MGU": MGUCell,
    "JANET": JANETCell,
    "AntisymmetricRNN": GatedAntisymmetricCell,
    "peephole LSTM": PeepholeLSTMCell,
    "CIFG LSTM": CIFGLSTMCell,
}
