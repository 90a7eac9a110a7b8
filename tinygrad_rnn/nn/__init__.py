"""tinygrad_rnn.nn: modules, layers, recurrent cells, the RNN unroll, initialisers and losses.

Everything here is composed of the engine's primitive ops; nothing defines a backward pass.
"""

from tinygrad_rnn.nn import init
from tinygrad_rnn.nn.cells import GRUCell, LSTMCell, RNNCell, RNNCellBase, hidden_of
from tinygrad_rnn.nn.layers import BatchNorm1d, Embedding, LayerNorm, Linear, ReLU, Sigmoid, Tanh, linear
from tinygrad_rnn.nn.losses import cross_entropy, mse_loss
from tinygrad_rnn.nn.module import Module, Sequential
from tinygrad_rnn.nn.rnn import RNN, detach_state

__all__ = [
    "Module", "Sequential", "Linear", "Embedding", "LayerNorm", "BatchNorm1d", "Tanh", "ReLU", "Sigmoid",
    "linear", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "RNN", "hidden_of", "detach_state",
    "init", "cross_entropy", "mse_loss",
]
