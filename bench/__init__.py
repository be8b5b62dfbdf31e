"""`make bench`: how fast, how big and how well the shop scales, measured as its users see it.

A bounded load generator on loopback against a stack this tool starts itself (fresh stores under
var/bench/), on SQLite and on PostgreSQL; it prints a table and writes the report, its plot and
results.json under var/bench/ (ignored by git). The committed docs/benchmarks.md changes only on
purpose: `make bench-report` (or BENCH_PUBLISH=1 make bench) publishes the latest full run there.
"""

import sys
from pathlib import Path

# The roles' shared package, when not already on PYTHONPATH (make and pytest put it there).
_SHARED = str(Path(__file__).resolve().parents[1] / "functions" / "shared")
if _SHARED not in sys.path:
    try:
        import cqrs_common  # noqa: F401
    except ImportError:
        sys.path.insert(0, _SHARED)
