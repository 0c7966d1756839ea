import os
import subprocess
import sys

import pytest

from mlx_tune.models import cpu_blas


def test_off_switch_and_explicit_path(monkeypatch, tmp_path):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("MLX_TUNE_OPENBLAS", str(lib))
    assert cpu_blas.find_openblas() == lib
    monkeypatch.setenv("MLX_TUNE_BLAS", "off")
    assert cpu_blas.find_openblas() is None
    monkeypatch.delenv("MLX_TUNE_BLAS")
    monkeypatch.setenv("MLX_TUNE_OPENBLAS", str(tmp_path / "missing.so"))
    assert cpu_blas.find_openblas() is None


def test_never_on_macos(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cpu_blas.find_openblas() is None


def test_reexec_preloads_once(tmp_path):
    """A child that calls reexec_with_openblas restarts once with LD_PRELOAD set, then runs on."""
    lib = tmp_path / "libfake_openblas.so"
    # An empty shared object is a valid preload: build one only if a C compiler is around.
    src = tmp_path / "x.c"
    src.write_text("int mlx_tune_fake_blas_marker(void) { return 1; }\n")
    if subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True).returncode:
        import pytest

        pytest.skip("no C compiler to build a stand-in library")
    code = (
        "import os; from mlx_tune.models import cpu_blas; cpu_blas.reexec_with_openblas(); "
        "print(os.environ.get('LD_PRELOAD'), cpu_blas.active())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MLX_TUNE_BLAS_REEXEC")}
    env["MLX_TUNE_OPENBLAS"] = str(lib)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    if sys.platform.startswith("linux"):
        assert out.stdout.split() == [str(lib), str(lib)]
    else:
        assert out.stdout.split() == ["None", "None"]


def test_openblas_restart_only_at_the_console_entry(monkeypatch, tmp_path):
    """The restart decision is made by ``cli.run`` (the console script) for heavy commands only;
    invoking the click group in-process (``CliRunner``, as tests do) never restarts the process."""
    from click.testing import CliRunner

    from mlx_tune import cli

    calls = []

    class Restarted(Exception):
        pass

    def fake_reexec():
        calls.append(1)
        raise Restarted

    monkeypatch.setattr(cpu_blas, "reexec_with_openblas", fake_reexec)
    missing = str(tmp_path / "nope.yaml")
    result = CliRunner().invoke(cli.main, ["train", "-c", missing])
    assert result.exit_code != 0 and calls == []
    with pytest.raises(SystemExit):
        cli.run(["data", "stats", str(tmp_path / "none")])
    assert calls == []
    with pytest.raises(Restarted):
        cli.run(["train", "-c", missing])
    assert calls == [1]
