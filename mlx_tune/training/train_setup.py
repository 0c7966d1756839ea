"""Model setup for training: load the base, add LoRA / DoRA adapters (or unfreeze layers), and the
optimizer with its learning-rate schedule. All through mlx-lm's and mlx's public functions."""

from __future__ import annotations

from mlx_tune import UserError
from mlx_tune.training.train_config import TrainSettings


def target_keys(model, names: list[str] | str | None, num_layers: int) -> list[str] | None:
    """Map PEFT-style names (``q_proj``) and mlx-lm keys (``self_attn.q_proj``) to mlx-lm's keys."""
    if names is None or names == "all" or names == ["all"]:
        return None
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    import mlx.nn as nn

    available: list[str] = []
    for key, module in model.layers[0].named_modules():
        if isinstance(module, (nn.Linear, nn.QuantizedLinear)) or hasattr(module, "to_lora"):
            available.append(key)
    keys, unknown = [], []
    for name in names:
        hits = [k for k in available if k == name or k.endswith("." + name)]
        if not hits:
            unknown.append(name)
        keys.extend(h for h in hits if h not in keys)
    if unknown:
        raise UserError(
            f"target_modules: {', '.join(unknown)} not in the model's layers (have: {', '.join(available)})"
        )
    return keys


def _is_quantized(model) -> bool:
    import mlx.nn as nn

    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def setup_model(model, s: TrainSettings) -> dict:
    """Freeze the model and add adapters (or unfreeze layers); return mlx-lm's adapter config keys."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    n_layers = len(model.layers)
    num_layers = n_layers if s.num_layers == -1 else s.num_layers
    if num_layers > n_layers:
        raise UserError(f"num_layers: {num_layers} but the model has only {n_layers} layers")
    model.freeze()
    if s.fine_tune_type == "full":
        if _is_quantized(model):
            raise UserError(
                "fine_tune_type: full cannot train a quantized model (use lora/dora or a float base)"
            )
        if s.train_embeddings:
            model.unfreeze()
            for layer in model.layers[: n_layers - num_layers]:
                layer.freeze()
        else:
            for layer in model.layers[-num_layers:]:
                layer.unfreeze()
        return {"fine_tune_type": "full", "num_layers": num_layers, "lora_parameters": None}
    keys = target_keys(model, s.target_modules, num_layers)
    lora = {"rank": s.rank, "scale": s.lora_scale, "dropout": float(s.dropout)}
    if keys is not None:
        lora["keys"] = keys
    linear_to_lora_layers(model, num_layers, lora, use_dora=s.fine_tune_type == "dora")
    return {"fine_tune_type": s.fine_tune_type, "num_layers": num_layers, "lora_parameters": lora}


def make_optimizer(s: TrainSettings, total_updates: int):
    """Adam or AdamW with linear warmup, then cosine decay or a constant rate."""
    import mlx.optimizers as optim

    warmup = int(round(s.warmup * total_updates)) if s.warmup < 1 else int(s.warmup)
    warmup = min(warmup, max(total_updates - 1, 0))
    if s.lr_schedule == "cosine":
        main = optim.cosine_decay(s.learning_rate, max(total_updates - warmup, 1), s.min_learning_rate)
    else:
        main = s.learning_rate
    if warmup > 0:
        main_fn = main if callable(main) else (lambda _: s.learning_rate)
        lr = optim.join_schedules([optim.linear_schedule(0.0, s.learning_rate, warmup), main_fn], [warmup])
    else:
        lr = main
    if s.optimizer == "adamw":
        return optim.AdamW(learning_rate=lr, weight_decay=s.weight_decay)
    return optim.Adam(learning_rate=lr)
