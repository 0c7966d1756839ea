"""Stage 2, training: LoRA/DoRA fine-tuning on mlx-lm, then fusing the adapter into a model.

- ``train_config``: ``TrainSettings`` (every setting, its flag and YAML key) and the presets.
- ``interchange``: the settings as mlx-lm's own config keys.
- ``train_setup``: the model, its adapter layers and the optimizer.
- ``batching``, ``prefix``, ``grad_checkpoint``: tokenized batches and the loss, the shared-prefix
  path, gradient checkpointing of that path.
- ``loop``, ``checkpoints``, ``run_folder``: the training loop, its checkpoints, the run folder.
- ``train``: ``train()``, which wires the above together (``mlx-tune train``).
- ``fuse``, ``model_card``, ``upload``: the product of a run: the adapter fused into a model
  (``mlx-tune fuse``), the model card fusing writes next to it, and publishing the fused folder.
"""
