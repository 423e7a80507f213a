"""README.md pastes top to bottom: its ```python blocks run in order, in one Python process
and namespace (as pasted into one session), in an empty temporary folder.

A block opts out with ``# not run: <reason>`` on its first line (e.g. ``# not run: needs your
data``), for sections whose data a clone cannot have; every other block must run as written.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPT_OUT = re.compile(r"#\s*not run\b", re.IGNORECASE)


def python_blocks(text: str) -> list[str]:
    """The README's ```python blocks, in order (opted-out blocks left out)."""
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.MULTILINE | re.DOTALL)
    return [b for b in blocks if not OPT_OUT.match(b.lstrip().splitlines()[0] if b.strip() else "")]


def test_python_blocks_are_found_and_opt_out_works():
    text = textwrap.dedent("""
        ```python
        a = 1
        ```
        ```sh
        echo no
        ```
        ```python
        # not run: needs your data
        load("/data/x")
        ```
        ```python
        b = a + 1
        ```
    """)
    assert python_blocks(text) == ["a = 1\n", "b = a + 1\n"]
    assert len(python_blocks((ROOT / "README.md").read_text())) >= 4


@pytest.mark.slow
def test_readme_python_blocks_run_in_order_in_an_empty_folder(tmp_path):
    blocks = python_blocks((ROOT / "README.md").read_text())
    script = ["import os, sys, traceback", "NS = {'__name__': '__main__'}"]
    for i, b in enumerate(blocks, start=1):
        script.append(f"print('--- block {i}', flush=True)")
        script.append(f"exec(compile({b!r}, 'README.md python block {i}', 'exec'), NS)")
    script.append("print('--- all blocks ran', flush=True)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_", "TRANSFORMERS_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg",
               HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "home" / "hf"))
    (tmp_path / "home").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run([sys.executable, "-c", "\n".join(script)], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    assert "--- all blocks ran" in p.stdout
    # the runs the README promises, with their brain maps
    for run in ("first", "banded"):
        d = work / "results" / run
        assert (d / "results.zarr").is_dir() and (d / "report.png").is_file(), sorted(p.name for p in d.iterdir())
        assert list((d / "maps").glob("*.png")), f"no brain maps in {d}"
    assert (work / "results" / "sweep" / "summary.csv").is_file()
    assert (work / "syn" / "lebel_data.zarr").is_dir()  # the generated LITcoder pickle was imported
