# Two commands for a newcomer: `make up` (a local 7-peer cluster) and `make test` (the suite).
#
# tox needs python3.10 ... python3.13 on PATH. pyenv's shims only answer when PYENV_VERSION
# names a version, and tox's interpreter discovery does not pass that through, so the
# interpreters' own bin directories go on PATH (first the default 3.11, then the others).
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON_VERSIONS ?= 3.11.7 3.10.13 3.12.1 3.13.0
empty :=
space := $(empty) $(empty)
PYTHON_BINS := $(wildcard $(foreach v,$(PYTHON_VERSIONS),$(PYENV_ROOT)/versions/$(v)/bin))
export PATH := $(subst $(space),:,$(strip $(PYTHON_BINS) $(PATH)))
export PYENV_VERSION ?= $(subst $(space),:,$(PYTHON_VERSIONS))

VENV ?= .venv
BIN := $(VENV)/bin
PEERS ?= 7
PORT ?= 8000
DATA ?= ./data

.PHONY: up test dev system-tools lint type bench clean

$(BIN)/activate:
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(BIN)/activate
	$(BIN)/python -m pip install -q -e '.[test]' tox mypy ruff import-linter
	touch $@

dev: $(VENV)/.installed

up: dev
	$(BIN)/ringstore up -n $(PEERS) --data-dir $(DATA) --port $(PORT)

# Programs some tests drive that pip cannot give: headless Chromium and its driver (the web
# console's browser test) and rclone (a real S3 client). Installed from Debian's packages
# where they are missing and we may (root, apt-get); otherwise those tests skip and say why.
SYSTEM_TOOLS := chromium chromedriver rclone
SYSTEM_PACKAGES := chromium chromium-driver rclone

system-tools:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(SYSTEM_PACKAGES) (Debian packages) for the browser and rclone tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null; }; \
	else \
		echo "note: $(SYSTEM_TOOLS) not all installed and apt-get not usable here: their tests will skip"; \
	fi

test: dev system-tools
	$(BIN)/tox run

lint: dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

type: dev
	$(BIN)/mypy

bench: dev
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .tox .mypy_cache .ruff_cache .pytest_cache .hypothesis
