"""``python -m bench.report``: the collectives-report command (what its ranks run)."""
import sys

from bench.report.cli import main

sys.exit(main())
