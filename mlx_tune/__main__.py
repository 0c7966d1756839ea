from mlx_tune.cli import run

run()
