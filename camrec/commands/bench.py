"""`camrec bench NAME`: benchmarks, each in its own module under camrec/bench/."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

ORDER = 90


def register(sub: argparse._SubParsersAction) -> None:
    import camrec.bench

    s = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    bench_sub = s.add_subparsers(dest="bench", required=True, metavar="BENCHMARK", parser_class=type(s))
    for info in sorted(pkgutil.iter_modules(camrec.bench.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):  # private helpers of a benchmark, not benchmarks
            continue
        module = importlib.import_module(f"camrec.bench.{info.name}")
        if hasattr(module, "register"):
            module.register(bench_sub)
