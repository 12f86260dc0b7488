# Two entry points for a fresh machine; both set up .venv first (idempotent).
#   make quickstart   fetch IMDB + MiniLM, profile the data, train and evaluate (CPU-sized preset without a GPU)
#   make test         run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup quickstart test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[onnx,openvino,serve,test,bench,tune,ray]'
	touch $@

quickstart: setup
	$(BIN)/critic quickstart

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)
