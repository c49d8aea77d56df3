# tmzoo — the two commands: `make demo` (set up + main job) and `make test` (set up + tests).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tmzoo-installed

.PHONY: setup demo test test-slow test-all bench bench-quick bench-scale clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m tmzoo.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

# against the reference implementation's own code (../shared/reference; see benchmarks/README.md)
bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick --reference ../shared/reference

bench: $(STAMP)
	$(PY) benchmarks/run.py --reference ../shared/reference

bench-scale: $(STAMP)
	$(PY) benchmarks/scale.py --quick

clean:
	rm -rf demo-output lightning_logs wandb .pytest_cache
