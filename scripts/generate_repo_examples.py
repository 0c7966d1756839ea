#!/usr/bin/env python3
"""Generate grep / read / direct training examples from the repositories in data/repos/ into
data/repos_examples/training_examples.jsonl.

Same as ``mlx-tune data repo-examples``; options pass through (``--help`` lists them), e.g.
``--repos data/repos --grep 300 --read 150 --direct 220 --seed 0 --format tools``.
"""

import sys

from mlx_tune.cli import main

if __name__ == "__main__":
    main(["data", "repo-examples", *sys.argv[1:]], prog_name="generate_repo_examples.py")
