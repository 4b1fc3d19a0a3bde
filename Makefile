# The two commands of the README:  `make` (quick sweep + book)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Data: ../shared/data when it sits beside the checkout (this project's machines), else
# $AMORTLIB_DATA as set by the user, else amortlib downloads into ~/.cache/amortlib/data.
ifneq ($(wildcard ../shared/data),)
export AMORTLIB_DATA ?= $(abspath ../shared/data)
endif

# torch: TORCH=default takes PyPI's wheels (on Linux a CUDA build, about 5 GB with its CUDA
# libraries); TORCH=cpu takes the same versions from PyTorch's CPU index (no CUDA libraries).
TORCH     ?= default
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PINS = $(shell grep -E '^(torch|torchvision)==' requirements/torch.txt)
ifeq ($(TORCH),cpu)
TORCH_INSTALL = $(BIN)/python -m pip install -q --index-url $(CPU_INDEX) $(TORCH_PINS)
else ifeq ($(TORCH),default)
TORCH_INSTALL = $(BIN)/python -m pip install -q -r requirements/torch.txt
else
$(error TORCH=$(TORCH) is invalid: expected default or cpu)
endif

.PHONY: all sweep book test test-unit test-notebooks test-book clean lock
all: sweep book

# Everything but the torch stack is installed from a lock with hashes (requirements/*.lock),
# then the torch stack by version (requirements/torch.txt), then amortlib itself, editable.
$(VENV)/.installed: pyproject.toml requirements/book.lock requirements/torch.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements/book.lock
	$(TORCH_INSTALL)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

# The test tools on top: pytest, nbval, the workflow validator, the link checker, playwright.
$(VENV)/.installed-test: $(VENV)/.installed requirements/test.lock
	$(BIN)/python -m pip install -q --require-hashes -r requirements/test.lock
	$(BIN)/python -m pip check
	touch $@

sweep: $(VENV)/.installed
	$(BIN)/amortlib sweep --profile quick

book: $(VENV)/.installed
	$(BIN)/python -m amortlib.book build

# The tests read the results committed with the book, not whatever `make` produced locally.
# The notebooks' stored outputs are compared under amortlib.devtools.REPRODUCIBLE_NUMERICS.
test: export AMORTLIB_RESULTS = $(CURDIR)/results/published/quick
test: $(VENV)/.installed-test
	$(BIN)/python -m amortlib.book assets
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	$(BIN)/python -m amortlib.devtools nbval

# Regenerate requirements/ from pyproject.toml (one universal resolution; needs uv).
lock:
	$(BIN)/python -m pip install -q uv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python requirements/make_lock.py

clean:
	rm -rf _build .jupyter_cache
