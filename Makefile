# Latchkey: the two front-door commands are `make run` and `make test`.
# Everything happens inside .venv; nothing here needs root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck venv deps test-deps bench clean test-backends test-cluster \
	test-embedded test-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The server and the SDK are two distributions; both install editable.
deps: $(BIN)/python
	$(BIN)/pip install -q -e ./resource_server -e ./server -e ./client_sdk

test-deps: deps
	$(BIN)/pip install -q -r requirements-test.txt

run: deps
	$(BIN)/latchkey-server --host $(HOST) --port $(PORT)

test: test-deps
	$(BIN)/ruff check .
	$(typecheck)
	$(BIN)/python -m pytest --ignore=tests/packaging
	$(MAKE) --no-print-directory -j2 --output-sync=target test-cluster test-embedded test-wheels

# The server's end-to-end session tests again, on a 3-master Redis Cluster on loopback and
# on the embedded default (tests/conftest.py reads LATCHKEY_TEST_BACKEND); the two runs go
# in parallel. The cluster run adds the operator paths (admin CLI and HTTP view);
# tests/server/test_cluster.py, in the main run, covers what only a cluster can show.
BACKEND_TESTS := tests/server/test_core_e2e.py tests/server/test_sessions_list_and_logout.py \
	tests/server/test_sessions_policy.py tests/server/test_stepup_password.py \
	tests/server/test_binding.py tests/server/test_credential_races.py \
	tests/server/test_refresh_cost.py tests/server/test_dpop_interop.py tests/model
CLUSTER_TESTS := tests/server/test_admin_cli.py tests/server/test_admin_http.py

test-backends: test-cluster test-embedded

test-cluster: test-deps
	LATCHKEY_TEST_BACKEND=cluster $(BIN)/python -m pytest -q $(BACKEND_TESTS) $(CLUSTER_TESTS)

test-embedded: test-deps
	LATCHKEY_TEST_BACKEND=embedded $(BIN)/python -m pytest -q $(BACKEND_TESTS)

# The distributions as a user gets them: sdists and wheels built once with `python -m build`,
# installed non-editable into a fresh venv on every Python the classifiers name (3.11-3.13,
# via pyenv), and served and signed in from there (tests/packaging/test_wheels.py).
test-wheels: test-deps
	$(BIN)/python -m pytest -q tests/packaging

lint: test-deps
	$(BIN)/ruff check .

# mypy --strict: the whole SDK, and the server's public modules (the list and the reasons are
# in each distribution's pyproject.toml, [tool.mypy]). Run from each distribution's directory
# so its own config applies; the caches in .mypy_cache/ keep a rerun to a few seconds.
# tests/packaging checks the SDK again as a user's project sees it: the installed wheel.
define typecheck
cd client_sdk && ../$(BIN)/mypy
cd server && ../$(BIN)/mypy
cd resource_server && ../$(BIN)/mypy
endef

typecheck: test-deps
	$(typecheck)

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
