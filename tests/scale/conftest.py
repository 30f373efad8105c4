"""Fixtures of the load-and-fault tests: simulated hosts enrolled on real server instances."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:  # scale.* and server._softtpm as top-level packages
    sys.path.insert(0, str(TESTS))
