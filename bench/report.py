"""``python bench/report.py results.json [-o report.md] [--plot plot.png]``: same as ``fastrnn bench-report``."""

import sys

from fastrnn.tools.bench_report import main

if __name__ == "__main__":
    sys.exit(main())
