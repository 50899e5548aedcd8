"""`python -m realtime.bench <benchmark> ...`: the same as `realtime bench <benchmark> ...`."""

from __future__ import annotations

import sys

from realtime.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
