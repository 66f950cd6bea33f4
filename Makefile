# Set-up and the two everyday jobs. `make quickstart` runs the whole pipeline on CIFAR-10; `make test` runs the tests.
# Both create the virtual environment in .venv on first use. Data: HF_SSDD_DATA_DIR (a folder of parquet
# datasets) if set, else ../shared/data if it exists, else the Hugging Face Hub.
VENV ?= .venv
PYTHON ?= python3
SHARED_DATA := $(wildcard $(abspath ../shared/data))
HF_SSDD_DATA_DIR ?= $(SHARED_DATA)
export HF_SSDD_DATA_DIR

.PHONY: install quickstart test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/hf-ssdd quickstart

test: install
	$(VENV)/bin/python -m pytest -q

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
