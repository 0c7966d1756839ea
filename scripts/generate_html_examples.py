#!/usr/bin/env python3
"""Write the HTML pages to data/html/ and the HTML examples to data/html_examples/
(same as `mlx-tune data html-examples`).

    python scripts/generate_html_examples.py --seed 0
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_tune.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["data", "html-examples", *sys.argv[1:]], prog_name="generate_html_examples.py")
