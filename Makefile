# Two commands do everything: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: demo test bench lint clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "custval needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/custval demo --out $(DEMO_DIR)

# two workers, a test file each at a time (its module fixtures are built once): the suite's
# subprocesses, servers and database round trips leave a core idle otherwise
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(VENV)/.installed-test
	$(BIN)/python bench/synth.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/segments.py
	$(BIN)/python bench/clv_scale.py
	@if [ -d ../shared/data ]; then \
		$(BIN)/python bench/btyd_cdnow.py && $(BIN)/python bench/btyd_donations.py && \
		$(BIN)/python bench/value_telco.py && $(BIN)/python bench/value_cdnow.py && \
		$(BIN)/python bench/clv_cdnow.py; \
	else echo "../shared/data is absent: the CDNOW and donations checks are skipped"; fi

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
