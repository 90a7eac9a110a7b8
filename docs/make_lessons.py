"""Make the pictures of docs/lessons.md: run every lesson in examples/lessons at full size and keep its
PNGs in docs/lessons/ (the SVGs stay in a temporary folder; the lessons themselves write both to
out/lessons/).

    python docs/make_lessons.py            # all lessons
    python docs/make_lessons.py 04 06      # only the lessons whose names start so

Prints each lesson's output and its run time. The numbers are deterministic (fixed seeds).
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LESSONS = HERE.parent / "examples" / "lessons"
OUT = HERE / "lessons"
sys.path.insert(0, str(LESSONS))

from make_pictures import shrink_png  # noqa: E402  (this folder is on the path: docs/make_pictures.py)


def main(prefixes: list[str]) -> None:
    names = sorted(p.stem for p in LESSONS.glob("[0-9][0-9]_*.py"))
    names = [n for n in names if not prefixes or any(n.startswith(p) for p in prefixes)]
    OUT.mkdir(exist_ok=True)
    times = {}
    for name in names:
        print(f"==== {name} ====")
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            result = importlib.import_module(name).main(quick=False, out=Path(scratch))
            times[name] = time.perf_counter() - start
            for path in map(Path, result["paths"]):
                if path.suffix == ".png":
                    target = OUT / path.name
                    shutil.copyfile(path, target)
                    shrink_png(target)
                    print(f"kept {target.relative_to(HERE.parent)} ({target.stat().st_size // 1024} KB)")
        print()
    print("run times at full size: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in times.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
