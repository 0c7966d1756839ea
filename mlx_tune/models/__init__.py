"""Models and the machine they run on, below every stage.

- ``model_spec``: the one loader of model specs (``PATH``, ``HF_ID``, ``BASE@ADAPTER``).
- ``cpu_blas``: the OpenBLAS decision on Linux (made once, at the console-script entry).
- ``tiny``, ``tiny_corpus``, ``tiny_pretrain``: the embedded tiny Qwen2-architecture model the demo
  and the tests train, its local pretraining text and its pretraining.
"""
