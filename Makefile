# The two commands of the README: `make demo` and `make test`.
# Both create .venv from nothing on first use (Python >= 3.11) and reuse it after;
# the environment is reinstalled when pyproject.toml or constraints.txt change.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export MPLBACKEND := Agg

.PHONY: demo test venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip -c constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scalenc demo

test: $(STAMP)
	@mkdir -p $(NUMBA_CACHE_DIR)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/assembly_build.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
