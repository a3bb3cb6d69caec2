"""``python -m livar_bench ARGS`` == ``livar-bench ARGS``."""

from livar_bench.cli import main

main()
