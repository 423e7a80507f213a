"""Experiment loggers: wandb without an API key and without WANDB_MODE logs offline with one
warning line (no traceback), in a fake HOME with no netrc and no wandb settings."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("wandb")

SCRIPT = textwrap.dedent("""
    import sys
    from scalenc.loggers import make_logger

    try:
        exp = make_logger("wandb", run_dir=sys.argv[1], run_name="tutorial", project="scalenc-test")
    except ValueError as e:
        sys.exit(f"error: {e}")
    exp.log_scalars({"median_r_check": 0.625}, step=0)
    exp.close()
    print("finished")
""")


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]), **extra)
    return env


def test_wandb_without_key_logs_offline_with_one_warning(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    run_dir = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(run_dir)], cwd=tmp_path, env=_env(home),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "finished"
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(err) == 1, p.stderr
    assert "no API key" in err[0] and "wandb sync" in err[0] and "Traceback" not in p.stderr
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and str(runs[0]) in err[0]
    logged = b"".join(f.read_bytes() for f in runs[0].glob("*.wandb"))
    assert b"median_r_check" in logged  # the values were written to the offline run


def test_wandb_explicit_online_mode_without_key_still_fails_in_one_line(tmp_path):
    """WANDB_MODE=online says the user wants the server: no silent fallback."""
    home = tmp_path / "home"
    home.mkdir()
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], cwd=tmp_path,
                       env=_env(home, WANDB_MODE="online"), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1 and p.stderr.startswith("error: logger_backend='wandb' with WANDB_MODE=online: No API key")
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not list((tmp_path / "run").glob("wandb/offline-run-*"))
