# `make demo` and `make test` set everything up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch must be installed before the package, or pip resolves
# the torch range to a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= offline,dev,search,sweep,onnx,serve

.PHONY: demo test lint install browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/tickettune demo -o demo-out --overwrite

# The architecture and style rules (pyproject.toml): layers and private names (import-linter), ruff, mypy.
lint: $(VENV)/.installed
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q tests

# A headless Chromium for the serve page's browser test (skipped without one): playwright's own download,
# else Debian's package (needs root).
browser: $(VENV)/.installed
	$(PY) -m playwright install chromium-headless-shell || (apt-get update && apt-get install -y chromium-headless-shell)

clean:
	rm -rf $(VENV) demo-out
