"""Moved: the character-level RNN is ``tinygrad_rnn.charrnn`` (the training app lives in the library)."""

import warnings

from tinygrad_rnn.charrnn import CharRNN, sample, window_loss, window_predictions

__all__ = ["CharRNN", "window_loss", "window_predictions", "sample"]

warnings.warn("visualize.char_rnn moved to tinygrad_rnn.charrnn", DeprecationWarning, stacklevel=2)
