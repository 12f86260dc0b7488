# Two entry points for a fresh machine; both set up .venv first (idempotent).
#   make quickstart   fetch IMDB + MiniLM, profile the data, train and evaluate (CPU-sized preset without a GPU)
#   make test         run the test suite (everything: what CI runs)
#   make test-fast    the suite without its slow and integration tests, for development (about 2 minutes)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup quickstart test test-fast
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[onnx,openvino,labels,serve,test,bench,tune,ray]'
	touch $@

quickstart: setup
	$(BIN)/critic quickstart

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not integration" $(PYTEST_ARGS)
