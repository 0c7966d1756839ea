"""Stage 3, evaluation: generate answers, score them, benchmark models side by side.

- ``evaluate``: batched greedy generation sharing the prompt prefix, and perplexity;
  ``json_prefix`` stops an answer whose tool-call JSON is broken.
- ``agent``: the multi-turn loop that runs a model's tool calls in the sandbox.
- ``metrics``, ``call_check``, ``intervals``, ``baselines``: scoring, the check that a call can
  answer its question, confidence intervals, models that need no model.
- ``bench`` (``mlx-tune bench``, ``python -m mlx_tune.bench``) with ``bench_inputs`` (which models
  and queries), ``bench_model`` and ``bench_measure`` (one model's figures), ``bench_score``
  (scoring answers made elsewhere), ``bench_report`` and ``bench_chart`` (results.md, chart.png).
"""
