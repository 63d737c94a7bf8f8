# Two commands do everything: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output
# the lock: the tested version of every dependency (custval's and the test extra's), for every
# Python from 3.11 on; every install below goes through it, `make lock` remakes it
LOCK := constraints.txt
UV_VERSION := 0.13.9

.PHONY: demo test docs bench lint lock clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "custval needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e .
	@touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test]'
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/custval demo --out $(DEMO_DIR)

# every printed output in README.md and docs/*.md, made afresh: the demo first, then each block
# marked `<!-- output: COMMAND -->` gets COMMAND's output (tools/docs.py)
docs: $(VENV)/.installed
	$(BIN)/python tools/docs.py

# two workers, a test file each at a time (its module fixtures are built once): the suite's
# subprocesses, servers and database round trips leave a core idle otherwise
test: $(VENV)/.installed-test
	CUSTVAL_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(VENV)/.installed-test
	$(BIN)/python bench/synth.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/segments.py
	$(BIN)/python bench/clv_scale.py
	$(BIN)/python bench/monitor.py
	$(BIN)/python bench/spark.py
	$(BIN)/python bench/pg_engine.py
	$(BIN)/python bench/features_auto.py
	@if [ -d ../shared/data ]; then \
		$(BIN)/python bench/btyd_cdnow.py && $(BIN)/python bench/btyd_donations.py && \
		$(BIN)/python bench/value_telco.py && $(BIN)/python bench/value_cdnow.py && \
		$(BIN)/python bench/clv_cdnow.py; \
	else echo "../shared/data is absent: the CDNOW and donations checks are skipped"; fi

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/lint-imports

# upgrading: `make lock` (the newest versions pyproject.toml allows, one version of each package
# for all Pythons where one fits them all), then `make test`; commit constraints.txt when it passes
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 \
		--fork-strategy fewest --upgrade --custom-compile-command 'make lock' --quiet -o $(LOCK)
	@git diff --no-color --unified=0 -- $(LOCK) 2>/dev/null | grep -E '^[-+][A-Za-z]' || true

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
