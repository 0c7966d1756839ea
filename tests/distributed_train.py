"""Run by tests/test_distributed.py under ``mlx.launch``: train the tiny model, print the summary.

python tests/distributed_train.py MODEL DATA ADAPTER_PATH
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_tune.training.train import train  # noqa: E402
from tests.conftest import train_settings  # noqa: E402

if __name__ == "__main__":
    import mlx.core as mx

    model, data, out = sys.argv[1:4]
    summary = train(train_settings(model, data, out, **json.loads(sys.argv[4])), progress=False)
    print(json.dumps({"rank": mx.distributed.init().rank(), "summary": summary}), flush=True)
