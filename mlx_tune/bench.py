"""``python -m mlx_tune.bench``: the benchmark's command line under its old name, a thin entry point.

The benchmark itself is :mod:`mlx_tune.eval.bench` (also ``mlx-tune bench``). Run as a script, this
module makes the OpenBLAS decision first (:func:`mlx_tune.models.cpu_blas.reexec_with_openblas`), as
the console script does, then runs the benchmark's click command. Importing it does nothing.
"""

if __name__ == "__main__":
    from mlx_tune.models import cpu_blas

    cpu_blas.reexec_with_openblas()

    from mlx_tune.eval.bench import command

    command()
