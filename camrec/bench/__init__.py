"""`camrec bench …` benchmarks. Each module here with a `register(subparsers)` function adds one
benchmark (discovered by camrec/commands/bench.py). Benchmarks report ratios against a baseline
measured in the same run: absolute times on these machines vary 2–6× between runs.
At the top of the tree with commands: may import every package."""
