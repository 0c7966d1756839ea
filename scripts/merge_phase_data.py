#!/usr/bin/env python3
"""Merge a phase's inputs into data/phaseN/ (same as `mlx-tune data merge`).

python scripts/merge_phase_data.py --phase 7
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_tune.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["data", "merge", *sys.argv[1:]], prog_name="merge_phase_data.py")
