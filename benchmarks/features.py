"""Benchmark: feature extraction (issue: language-model and speech extractors vs their
one-item-per-forward loops). Runs ``features_lm.py`` and ``features_speech.py`` in turn;
each prints its own table (``--device cuda`` on a GPU machine reports words/s and
audio-seconds/s there).

    python benchmarks/features.py [--device cuda]
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    rc = 0
    for script in ("features_lm.py", "features_speech.py"):
        rc |= subprocess.call([sys.executable, str(HERE / script), *sys.argv[1:]])
    sys.exit(rc)
