# Latchkey: the two front-door commands are `make run` and `make test`.
# Everything happens inside .venv; nothing here needs root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint venv deps test-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The server and the SDK are two distributions; both install editable.
deps: $(BIN)/python
	$(BIN)/pip install -q -e ./server -e ./client_sdk

test-deps: deps
	$(BIN)/pip install -q -r requirements-test.txt

run: deps
	$(BIN)/latchkey-server --host $(HOST) --port $(PORT)

test: test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: test-deps
	$(BIN)/ruff check .

bench: test-deps
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python -m bench.hot_path
	$(BIN)/python -m bench.compare_peer

clean:
	rm -rf $(VENV) instance .pytest_cache

# The Kivy demo on a desktop: latchkey-server on the embedded default (its own Redis) in
# the background on $(HOST):$(PORT), the app in front; closing the app stops the server.
.PHONY: demo
demo: deps
	$(BIN)/pip install -q -r demo_app/requirements.txt
	$(BIN)/python demo_app/devserver.py --host $(HOST) --port $(PORT)
