"""Run every benchmark: ``python -m benchmarks [--toy] [--only NAME]``.

``--toy`` runs each at toy size on whatever device is present (the smoke test and
``make bench`` use it so that no benchmark rots); without it each runs at its real size.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path


def discover() -> list[str]:
    root = Path(__file__).resolve().parent
    return sorted(f"benchmarks.{p.parent.name}.{p.stem}" for p in root.glob("*/bench_*.py"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--toy", action="store_true", help="toy sizes (seconds, CPU)")
    ap.add_argument("--only", default=None, help="substring of the benchmark module to run")
    args, rest = ap.parse_known_args(argv)
    mods = [m for m in discover() if args.only is None or args.only in m]
    if not mods:
        print(f"no benchmark matches {args.only!r}; have: {', '.join(discover())}", file=sys.stderr)
        return 2
    for name in mods:
        print(f"== {name}", flush=True)
        importlib.import_module(name).main((["--toy"] if args.toy else []) + rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
