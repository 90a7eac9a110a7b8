"""``python -m visualize``: the ``tinygrad-rnn`` command, for when the script is not on PATH."""

import sys

from visualize.cli import main

sys.exit(main())
