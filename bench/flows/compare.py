"""The flows benchmark before and after a change, in one run: `bench/flows/run.py` of this tree
and of git revision REV, alternately, each on its own broker and home.

    .venv/bin/python bench/flows/compare.py --baseline REV [--rounds 2] [run.py options...]

REV's tree is exported with `git archive` and its own `bench/flows/run.py` runs from it (with
this virtualenv), so the baseline is measured with the record formats, keys and settings of its
own revision; options after `--baseline` and `--rounds` go to both. Rounds alternate the order
(now, base, base, now, ...) so a machine that slows down for a while weighs on both alike. Prints
each run's figures and the median ratio now/base of the flow rate, the raw consume rate (the
machine's speed at that moment) and freshness p99.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "consume records/s": r"\(a\) baseline raw consume.*?([\d,]+) records/s",
    "flow calls/s": r"\(b\) flow.*?([\d,]+) calls/s",
    "freshness p99 s": r"\(c\) freshness.*?p99 ([\d.]+)s",
}


def measure(tree: Path, options: list[str], label: str) -> dict[str, float]:
    """One run of `tree`'s flows benchmark; its figures by name (its output is echoed)."""
    print(f"--- {label}: {tree}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(tree / "bench" / "flows" / "run.py"), *options],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    print(out.stdout, end="", flush=True)
    if out.returncode != 0:
        raise SystemExit(f"{label} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    figures = {}
    for name, pattern in FIGURES.items():
        found = re.search(pattern, out.stdout)
        if found is None:
            raise SystemExit(f"{label}: no '{name}' in its output")
        figures[name] = float(found.group(1).replace(",", ""))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side (default 2)")
    args, options = parser.parse_known_args()
    workdir = Path(tempfile.mkdtemp(prefix="tokentrail-bench-flows-compare-"))
    try:
        base_tree = workdir / "base"
        base_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(base_tree)], input=archive.stdout, check=True)
        runs: dict[str, list[dict[str, float]]] = {"now": [], "base": []}
        for round_number in range(args.rounds):
            order = ["now", "base"] if round_number % 2 == 0 else ["base", "now"]
            for side in order:
                tree = ROOT if side == "now" else base_tree
                runs[side].append(measure(tree, options, f"round {round_number + 1}, {side}"))
        print(f"\nnow = this tree, base = {args.baseline}; {args.rounds} runs each, options {options or 'defaults'}")
        print(f"{'figure':<20} {'now':>28} {'base':>28} {'now/base (median)':>18}")
        for name in FIGURES:
            now = [run[name] for run in runs["now"]]
            base = [run[name] for run in runs["base"]]
            ratio = statistics.median(now) / statistics.median(base)
            print(
                f"{name:<20} {', '.join(f'{v:,.2f}' for v in now):>28} "
                f"{', '.join(f'{v:,.2f}' for v in base):>28} {ratio:>18.3f}"
            )
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
