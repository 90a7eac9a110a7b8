"""Train a character-level RNN, watch its loss fall, sample text from it, and draw its unrolled graph.

    python examples/char_rnn.py               # about a minute on two cores
    python examples/char_rnn.py --quick       # about ten seconds
    python examples/char_rnn.py --resume      # carry on from out/char_rnn.npz
    python examples/char_rnn.py --text FILE   # any text file (default: Python's own standard library source)
    python examples/char_rnn.py --cell lstm   # an LSTM instead of the vanilla tanh RNN

What it shows:
- The loss of a window starts at about T ln V: an untrained model spreads its bets evenly over the V
  characters at each of the T steps. Everything it learns shows as the loss falling below that.
- Backpropagation through time is ``loss.backward()`` on the unrolled graph; nothing else. The state
  is carried from one window to the next and detached there (truncated BPTT over the whole text).
- At the end, the unrolled graph of a 4-step window is drawn with its local gradients on the edges
  (out/char_rnn_steps.svg and out/char_rnn_ops.svg).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tinygrad_rnn import checkpoint, nn, no_grad, softmax, stack
from tinygrad_rnn.clip import clip_grad_norm_
from tinygrad_rnn.data import CharCorpus, CharVocab, load_text, one_hot, random_windows, sequential_windows
from tinygrad_rnn.optim import Adam


class CharRNN(nn.Module):
    """One-hot characters -> a recurrent cell -> a linear layer giving the next character's logits."""

    def __init__(self, vocab_size: int, hidden_size: int, cell: str = "rnn", seed: int = 0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        make_cell = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell}[cell]
        self.vocab_size = vocab_size
        self.rnn = nn.RNN(make_cell(vocab_size, hidden_size, rng=rng, dtype=dtype))
        self.head = nn.Linear(hidden_size, vocab_size, rng=rng, dtype=dtype)

    def forward(self, ids, state=None):
        """ids (T, B) -> logits (T, B, V), the hidden outputs [h_1..h_T] and the last state."""
        inputs = one_hot(ids, self.vocab_size, self.rnn.cell.dtype)
        hiddens, state = self.rnn(inputs, h0=state)
        return self.head(stack(hiddens)), hiddens, state


def window_loss(model, inputs, targets, state):
    """Cross-entropy summed over the T steps, averaged over the B streams: T ln V when guessing."""
    logits, hiddens, state = model(inputs, state)
    return nn.cross_entropy(logits, targets, reduction="sum") / targets.shape[1], hiddens, state


def sample(model, vocab: CharVocab, prompt: str, length: int, rng, temperature: float = 0.8) -> str:
    """Feed ``prompt`` one character at a time, then draw ``length`` more from the model's softmax."""
    cell, state, chosen = model.rnn.cell, None, []
    with no_grad():
        ids = list(vocab.encode(prompt))
        for step in range(len(ids) + length - 1):
            x = one_hot([ids[step] if step < len(ids) else chosen[-1]], model.vocab_size, cell.dtype)
            state = cell(x, state)
            if step >= len(ids) - 1:
                probs = softmax(model.head(nn.hidden_of(state)) / temperature).numpy()[0].astype(np.float64)
                chosen.append(int(rng.choice(len(probs), p=probs / probs.sum())))
    return prompt + vocab.decode(chosen)


def draw_window(model, ids, out_dir: Path) -> None:
    """The unrolled graph of a 4-step window with its local gradients, if ``visualize`` can draw it."""
    try:
        import visualize
    except ImportError:
        print("pictures: skipped (the visualize package is not importable)")
        return
    missing = [name for name in ("draw_steps", "draw_graph", "render") if not hasattr(visualize, name)]
    if missing:
        print(f"pictures: skipped (visualize has no {', '.join(missing)} yet)")
        return
    window = ids[:5, None]  # one stream, 4 steps
    h0 = model.rnn.cell.initial_state(1)
    loss, hiddens, _ = window_loss(model, window[:-1], window[1:], h0)
    loss.backward()
    states = [nn.hidden_of(h0), *hiddens]  # the step view wants h_0 .. h_T
    for name, picture in [("steps", visualize.draw_steps(loss, states)), ("ops", visualize.draw_graph(loss))]:
        print(f"pictures: {visualize.render(picture, out_dir / f'char_rnn_{name}.svg')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", help="a text file to learn (default: Python standard library source)")
    parser.add_argument("--cell", choices=["rnn", "lstm"], default="rnn")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seq", type=int, default=25, help="T: steps per window (BPTT length)")
    parser.add_argument("--batch", type=int, default=32, help="B: parallel streams through the text")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    parser.add_argument("--steps", type=int, help="stop at this step (counted across resumes)")
    parser.add_argument("--quick", action="store_true", help="a ten-second run (for tests and a first look)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--checkpoint", type=Path, default=Path("out/char_rnn.npz"))
    parser.add_argument("--out", type=Path, default=Path("out"), help="where the pictures go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.hidden = min(args.seconds, 6.0), min(args.hidden, 64)

    corpus_text = load_text(args.text)
    saved = checkpoint.load(args.checkpoint) if args.resume else {}
    if args.resume:  # the checkpoint fixes the model's shape and its alphabet
        args.cell, args.hidden = str(saved["meta.cell"]), int(saved["meta.hidden_size"])
        corpus = CharCorpus(corpus_text, CharVocab(str(saved["meta.vocab"])))
    else:
        corpus = CharCorpus(corpus_text)
    vocab, V, T = corpus.vocab, len(corpus.vocab), args.seq
    train_ids, valid_ids = corpus.split(0.05, block=2_000)  # every 20th block of 2,000 characters
    model = CharRNN(V, args.hidden, args.cell, args.seed)
    optimizer = Adam(model.parameters(), lr=args.lr)
    windows = list(sequential_windows(train_ids, T, args.batch))
    step, state = 0, None
    if args.resume:
        meta = checkpoint.load_training(args.checkpoint, model, optimizer)
        step, parts = int(meta["step"]), [meta[f"state{i}"] for i in range(meta["state_parts"])]
        state = nn.detach_state(parts[0] if len(parts) == 1 else tuple(parts)) if parts else None
        print(f"resumed from {args.checkpoint} at step {step}")
    print(f"{corpus!r}; model {args.cell}, hidden {args.hidden}, T={T}, B={args.batch}, {len(windows)} windows a pass")
    print(f"a model that guesses uniformly scores T ln V = {T} ln {V} = {T * np.log(V):.1f} per window")

    start, last_print, smooth, first_step = time.perf_counter(), 0.0, None, step

    def progress():
        rate = f"{(step - first_step) / elapsed:5.1f} steps/s" if step > first_step + 1 else "(the first step)"
        print(f"step {step:5d}  loss {smooth:7.2f}  ({smooth / T:.3f} per char)  {rate}")

    while (args.steps is None or step < args.steps) and time.perf_counter() - start < args.seconds:
        if step % len(windows) == 0:
            state = None  # back at the start of the text: start from a zero state again
        inputs, targets = windows[step % len(windows)]
        optimizer.zero_grad()
        loss, _, state = window_loss(model, inputs, targets, state)
        loss.backward()
        clip_grad_norm_(model.parameters(), 5.0)  # one long-range spike must not wreck the weights
        optimizer.step()
        state = nn.detach_state(state)  # the next window starts here, but its gradients stop here
        step += 1
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        elapsed = time.perf_counter() - start
        if step == first_step + 1 or elapsed - last_print > (1.0 if args.quick else 5.0):
            progress()
            last_print = elapsed
    if step > first_step + 1 and elapsed != last_print:
        progress()  # the last step, when it was not just printed

    if len(valid_ids) > T:
        with no_grad():  # 64 held-out windows at random places, each from a zero state
            held_out = window_loss(model, *random_windows(valid_ids, T, 64, rng=args.seed), None)[0].item()
        print(f"held-out loss (5% of the text, never trained on): {held_out / T:.3f} per char "
              f"(uniform guessing: ln V = {np.log(V):.3f})")
    prompt = vocab.decode(valid_ids[:4])
    print("sample:\n" + sample(model, vocab, prompt, 300, np.random.default_rng(args.seed)))

    parts = () if state is None else state if isinstance(state, tuple) else (state,)
    extras = {f"state{i}": part.numpy() for i, part in enumerate(parts)}
    checkpoint.save_training(args.checkpoint, model, optimizer, step=step, cell=args.cell, hidden_size=args.hidden,
                             vocab="".join(vocab.chars), state_parts=len(parts), **extras)
    print(f"checkpoint: {args.checkpoint} (step {step}); run again with --resume to continue")
    draw_window(model, valid_ids, args.out)


if __name__ == "__main__":
    main()
