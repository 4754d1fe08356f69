# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/structvpr demo

# One pytest process per area, each with a fresh local Ray instance (docs/TESTING.md says why);
# every area runs and reports even when an earlier one failed.
TEST_AREAS := tests/datasets tests/platform tests/tuning tests/deploy 'tests/test_*.py'
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -ra --durations=20

test: $(STAMP)
	@failed=""; \
	for area in $(TEST_AREAS); do \
		echo "=== $$area"; $(PYTEST) $$area || failed="$$failed $$area"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED areas:$$failed"; exit 1; fi; echo "=== all areas passed"

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) structvpr-demo .pytest_cache
