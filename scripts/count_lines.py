"""How long the engine is to read: lines of code, docstrings, comments and blank lines aside.

    python scripts/count_lines.py

1. The engine: value.py, autograd.py and ops/.
2. The learner's path for ``tanh(x * x).backward()``: every function the run enters (traced with
   sys.settrace) counts whole, as a reader reads it, and so does each class statement it belongs to
   (its attributes); plus each module's top level (imports and tables) that the path's modules run.

A line of code is a line holding a token of code that is not part of a docstring.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINE = ["tinygrad_rnn/value.py", "tinygrad_rnn/autograd.py", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "tinygrad_rnn/ops").glob("*.py"))]


def code_lines(path: Path) -> set[int]:
    """The numbers of the lines of ``path`` that hold code (no docstring, comment or blank line)."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return lines


def learner_path() -> dict[str, set[int]]:
    """{file: code lines a reader of ``tanh(x * x).backward()`` reads}."""
    import tinygrad_rnn as tg

    entered: set = set()

    def trace(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(str(ROOT / "tinygrad_rnn")):
            entered.add((frame.f_code.co_filename, frame.f_code.co_firstlineno))
        return None

    x = tg.Value(3.0)
    sys.settrace(trace)
    try:
        (x * x).tanh().backward()
    finally:
        sys.settrace(None)
    read: dict[str, set[int]] = {}
    for filename in {f for f, _ in entered}:
        path = Path(filename)
        lines, tree = code_lines(path), ast.parse(path.read_text())
        starts = {line for f, line in entered if f == filename}
        chosen = set()
        for node in tree.body:  # the module's top level: imports, constants, tables
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                chosen.update(range(node.lineno, node.end_lineno + 1))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(node.lineno <= s <= node.end_lineno for s in starts):
                for item in node.body:  # the class's own statements (its attributes), not its other methods
                    if not isinstance(item, ast.FunctionDef):
                        chosen.update(range(item.lineno, item.end_lineno + 1))
                chosen.add(node.lineno)
            if isinstance(node, ast.FunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if first in starts or node.lineno in starts:
                    chosen.update(range(first, node.end_lineno + 1))
        read[str(path.relative_to(ROOT))] = lines & chosen
    return read


def main() -> None:
    total = 0
    print("the engine (value.py, autograd.py, ops/): lines of code")
    for name in ENGINE:
        n = len(code_lines(ROOT / name))
        total += n
        print(f"  {n:5d}  {name}")
    print(f"  {total:5d}  in all")
    path = learner_path()
    print("\nthe learner's path for tanh(x * x).backward(): lines of code read")
    for name, lines in sorted(path.items()):
        print(f"  {len(lines):5d}  {name}")
    print(f"  {sum(map(len, path.values())):5d}  in all, over {len(path)} files")


if __name__ == "__main__":
    main()
