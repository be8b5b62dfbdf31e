"""`python -m bench` from the repository root (what `make bench` runs)."""

from bench.run import main

main()
