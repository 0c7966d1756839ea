from mlx_tune.cli import main

main()
