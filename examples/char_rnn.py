"""Train a character-level RNN, watch its loss fall, sample text from it, and see how far back in time
its gradients reach: the same program as ``tinygrad-rnn train`` (tinygrad_rnn/training.py and
charrnn.py hold the model and its training; visualize/train.py the command and its pictures).

    python examples/char_rnn.py                    # about a minute on two cores
    python examples/char_rnn.py --seconds 10       # a first look
    python examples/char_rnn.py --resume --steps 500
    python examples/char_rnn.py --cell lstm --hidden 64 --checkpoint out/lstm.npz
    python examples/char_rnn.py --help             # every flag

What it shows:
- The loss per character starts at about ln V: an untrained model spreads its bets evenly over the V
  characters. Everything it learns shows as the loss falling below that.
- Backpropagation through time is ``loss.backward()`` on the unrolled graph; nothing else.
- out/char_rnn_steps.svg and .png: the step view of one 25-step training window (a prediction at every
  step) with the untrained and the trained weights; out/char_rnn_lags.svg and .png: the lag view, how
  far each prediction's error reaches back.
"""

import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runs from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from visualize.cli import LAUNCHER, main  # noqa: E402

if __name__ == "__main__":
    os.environ.setdefault(LAUNCHER, f"{shlex.quote(sys.executable)} {shlex.quote(sys.argv[0])}")  # what it prints runs
    sys.exit(main(["train", *sys.argv[1:]]))
