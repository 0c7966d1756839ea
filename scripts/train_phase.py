#!/usr/bin/env python3
"""Train one phase's adapter (a thin wrapper over `mlx-tune train --phase N`).

    python scripts/train_phase.py 7                  # mlx_tune/configs/phases/phase7.yaml -> adapters/phase7/
    python scripts/train_phase.py 7 --iters 50 --resume

Any `mlx-tune train` option can follow the phase number.
"""

import sys

from mlx_tune.cli import main, run

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        main(["train", "--help"])
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit("usage: train_phase.py N [mlx-tune train options]")
    run(["train", "--phase", sys.argv[1], *sys.argv[2:]])
