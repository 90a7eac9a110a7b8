"""A character-level RNN: one-hot characters -> a recurrent cell -> a linear layer giving the next
character's logits; its loss over a window, sampling text from it, and one window's loss with its
states, which the pictures of ``tinygrad-rnn train`` read. Trained by ``tinygrad_rnn.training``.
"""

from __future__ import annotations

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.autograd import no_grad
from tinygrad_rnn.data import CharVocab, one_hot
from tinygrad_rnn.functional import softmax, stack

__all__ = ["CELLS", "CharRNN", "set_forget_bias", "window_loss", "window_predictions", "sample"]

CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


class CharRNN(nn.Module):
    """One-hot characters -> a recurrent cell -> a linear layer giving the next character's logits."""

    def __init__(self, vocab_size: int, hidden_size: int, cell: str = "rnn", seed: int = 0, dtype=np.float32,
                 forget_bias: float | None = None):
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.rnn = nn.RNN(CELLS[cell](vocab_size, hidden_size, rng=rng, dtype=dtype))
        self.head = nn.Linear(hidden_size, vocab_size, rng=rng, dtype=dtype)
        if forget_bias is not None:
            set_forget_bias(self.rnn.cell, forget_bias)

    def forward(self, ids, state=None, return_states: bool = False):
        """ids (T, B) -> logits (T, B, V), the hidden outputs [h_1..h_T] and the last state (with
        ``return_states``, every state [s_0, ..., s_T] instead, as the step view reads them)."""
        inputs = one_hot(ids, self.vocab_size, self.rnn.cell.dtype)
        hiddens, state = self.rnn(inputs, h0=state, return_states=return_states)
        return self.head(stack(hiddens)), hiddens, state


def set_forget_bias(cell, value: float) -> None:
    """Start an LSTM's forget gates at f = sigmoid(value + W_if x + W_hf h): the forget block of
    ``bias_ih`` (rows H to 2H, PyTorch's gate order i, f, g, o) set to ``value`` and that of ``bias_hh``
    to 0, so the bias the gate sees, b_if + b_hf, is exactly ``value``.

    Why: at PyTorch's init the forget gates sit near 0.5, and the cell path c_{t-1} -> c_t halves a
    gradient at every step; a bias of 1 to 2 opens them (sigmoid(2) = 0.88), so a gradient crosses
    many more steps before it fades (Gers et al. 2000; Jozefowicz et al. 2015)."""
    if not isinstance(cell, nn.LSTMCell):
        raise ValueError(f"forget bias: only an LSTM has a forget gate, not {type(cell).__name__}")
    if cell.bias_ih is None:
        raise ValueError("forget bias: this LSTMCell has no biases (bias=False)")
    H = cell.hidden_size
    for bias, entry in ((cell.bias_ih, value), (cell.bias_hh, 0.0)):
        data = np.array(bias.data)
        data[H : 2 * H] = entry
        bias.data = data


def window_loss(model: CharRNN, inputs, targets, state):
    """Cross-entropy summed over the T steps, averaged over the B streams: T ln V when guessing."""
    logits, hiddens, state = model(inputs, state)
    return nn.cross_entropy(logits, targets, reduction="sum") / targets.shape[1], hiddens, state


def window_predictions(model: CharRNN, inputs, targets):
    """The loss the model trains on, for one window: every prediction's cross-entropy, summed, after
    backward, and the states [s_0, ..., s_T] (from a zero state; tuples (h, c) for an LSTM).

    It reads every state (prediction t reads h_t), so the step view's gradients mix all T predictions;
    the lag view (``visualize.draw_lags(loss, states)``) splits it back into one row per prediction."""
    logits, _, states = model(inputs, return_states=True)
    loss = nn.cross_entropy(logits, targets, reduction="sum")
    loss.backward()
    return loss, states


def sample(model: CharRNN, vocab: CharVocab, prompt: str, length: int, rng, temperature: float = 0.8) -> str:
    """Feed ``prompt`` one character at a time, then draw ``length`` more from the model's softmax."""
    if not prompt:
        raise ValueError("sample: the prompt must hold at least one character (the model starts from it)")
    if not temperature > 0:  # written so that NaN fails it too
        raise ValueError(f"sample: temperature must be a number > 0, got {temperature}")
    cell, state, chosen = model.rnn.cell, None, []
    with no_grad():
        ids = list(vocab.encode(prompt))
        for step in range(len(ids) + length - 1):
            x = one_hot([ids[step] if step < len(ids) else chosen[-1]], model.vocab_size, cell.dtype)
            state = cell(x, state)
            if step >= len(ids) - 1:
                probs = softmax(model.head(nn.hidden_of(state)) / temperature).numpy()[0].astype(np.float64)
                if not np.isfinite(probs).all():
                    raise ValueError("sample: the model's next-character probabilities are not numbers (its "
                                     "weights hold NaN or inf), so nothing can be drawn from them")
                chosen.append(int(rng.choice(len(probs), p=probs / probs.sum())))
    return prompt + vocab.decode(chosen)
