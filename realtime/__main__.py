"""`python -m realtime` runs the same CLI as the `realtime` console script."""

from __future__ import annotations

import sys

from realtime.cli import main

sys.exit(main())
