"""How long `selfalign --help` takes, against a bare Python start in the same process.

Target: well under 0.5 s (no torch, transformers or textual at start-up).
Run: .venv/bin/python benchmarks/startup.py
"""

import statistics
import subprocess
import sys
import time

REPEATS = 10


def timed(args: list[str]) -> float:
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    bare = timed([sys.executable, "-c", "pass"])
    helped = timed([sys.executable, "-m", "selfalign", "--help"])
    print(f"python -c pass      : {bare * 1000:7.1f} ms (median of {REPEATS})")
    print(f"selfalign --help    : {helped * 1000:7.1f} ms (median of {REPEATS})")
    print(f"ratio               : {helped / bare:7.2f}x a bare interpreter; target < 500 ms: "
          f"{'met' if helped < 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
