# The two commands of the README:  `make` (quick sweep + book)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Data: ../shared/data when it sits beside the checkout (this project's machines), else
# $AMORTLIB_DATA as set by the user, else amortlib downloads into ~/.cache/amortlib/data.
ifneq ($(wildcard ../shared/data),)
export AMORTLIB_DATA ?= $(abspath ../shared/data)
endif

.PHONY: all sweep book test test-unit test-notebooks test-book clean
all: sweep book

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[book,test]"
	touch $@

sweep: $(VENV)/.installed
	$(BIN)/amortlib sweep --profile quick

book: $(VENV)/.installed
	$(BIN)/python -m amortlib.book build

# The tests read the results committed with the book, not whatever `make` produced locally.
test: export AMORTLIB_RESULTS = $(CURDIR)/results/published/quick
test: $(VENV)/.installed
	$(BIN)/python -m amortlib.book assets
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbval notebooks --nbval-sanitize-with tests/nbval_sanitize.cfg

clean:
	rm -rf _build .jupyter_cache
