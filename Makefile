# Two commands do all the set-up on a fresh machine:
#   make serve   - make .venv, install the server, start it with the browser demo (embedded default)
#   make test    - make .venv, install the dev and sglang extras, chromium and haproxy, make .venv-clients (the
#                  newest openai, openai-agents, pipecat-ai and livekit-agents, for the client tests), run lint,
#                  types and tests
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.streamvoice-base
DEV_STAMP := $(VENV)/.streamvoice-dev
# Client venv: the newest openai (3.x), openai-agents, pipecat-ai and livekit-agents (lower bounds in
# CLIENT_REQUIREMENTS). The server's venv keeps the openai that SGLang pins, so real clients at their newest
# versions run from here (tests/realtime/test_compat.py); a changed requirements file remakes it.
CLIENTS_VENV := .venv-clients
CLIENTS_STAMP := $(CLIENTS_VENV)/.streamvoice-clients
CLIENT_REQUIREMENTS := tests/support/clients/requirements.txt
CLIENT_PACKAGES ?= -r $(CLIENT_REQUIREMENTS)
HOST ?= 127.0.0.1
PORT ?= 8000
SERVE_ARGS ?=

.PHONY: serve test lint typecheck pytest docs chromium haproxy clients clients-upgrade clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev,sglang]'
	touch $@ $(BASE_STAMP)

chromium:  ## install Debian's chromium for the browser tests when it is missing
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
		else echo "chromium missing and not root: the browser tests will be skipped" >&2; fi; }

$(CLIENTS_STAMP): $(CLIENT_REQUIREMENTS)
	@{ $(PYTHON) -m venv $(CLIENTS_VENV) \
		&& $(CLIENTS_VENV)/bin/python -m pip install -q --upgrade pip \
		&& $(CLIENTS_VENV)/bin/python -m pip install -q --upgrade $(CLIENT_PACKAGES) \
		&& touch $@; } \
		|| echo "could not make $(CLIENTS_VENV) (no package index?): the client SDK tests will be skipped" >&2

clients: $(CLIENTS_STAMP)  ## make .venv-clients: the newest openai, openai-agents, pipecat-ai, livekit-agents

clients-upgrade:  ## upgrade .venv-clients to the newest versions of its packages
	rm -f $(CLIENTS_STAMP)
	$(MAKE) clients

haproxy:  ## install Debian's haproxy for the load-balancer test when it is missing
	@command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends haproxy; \
		else echo "haproxy missing and not root: the load-balancer test will be skipped" >&2; fi; }

serve: $(BASE_STAMP)  ## start the server with the browser demo on the embedded default
	$(BIN)/realtime serve --host $(HOST) --port $(PORT) $(SERVE_ARGS)

lint: $(DEV_STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)  ## mypy: strict on streaming_parser and realtime, relaxed on token2wav
	$(BIN)/mypy streaming_parser realtime token2wav step_audio2_sglang

pytest: $(DEV_STAMP) chromium haproxy clients  ## run every test
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest

test: lint typecheck pytest  ## lint, types and every test

docs: $(DEV_STAMP)  ## rewrite the docs' settings tables from the declarations in realtime/config.py
	$(BIN)/python -m tests.support.doc_tables

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) $(CLIENTS_VENV) .pytest_cache .mypy_cache .ruff_cache
