# The two commands a newcomer runs (README): `make demo` and `make test`.
# Everything they need is installed here, from the project's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export NO_PROXY := 127.0.0.1,localhost
export no_proxy := 127.0.0.1,localhost

.PHONY: install system-deps demo-deps demo docs test lint typecheck unit bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,postgres,mysql]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Debian packages the test suite uses (Chromium for the HTML report, poppler for PDF
# receipts, a CJK font); installs only what is missing.
system-deps:
	bash scripts/install-system-deps.sh

# The demo's own system package (a CJK font for its PDF receipt), nothing else.
demo-deps:
	bash scripts/install-system-deps.sh demo

demo: install demo-deps
	$(BIN)/refund-gateway demo

# The reference site from the docstrings (docs/, mkdocs.yml) into .site/; warnings are
# errors, so a public name, field or setting without a docstring fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: install system-deps lint typecheck docs
	$(BIN)/pytest -n 3 --dist worksteal

# The benchmarks' baselines too (the `bench` extra: pandas for bench_reconcile.py).
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,postgres,mysql,bench]'
	rm -f $(VENV)/.bench-installed-*
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run_all.py
