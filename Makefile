# agent-chatbase: `make run` serves the app on embedded defaults, `make test` runs every test.
# Both set up what they need first (a .venv from the pinned requirements.txt, and for the tests
# Debian's chromium).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_HASH := $(shell sha1sum requirements.txt | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)

# llama-cpp-python ships only as source. A native (-march=native) build segfaults on this
# machine kind's AVX-512/AMX CPUs as soon as a prompt is decoded in batches, so it is built once
# for portable AVX2 and kept outside the checkout, where every clone reuses it.
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' requirements.txt)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
WHEELS := $(HOME)/.cache/agent-chatbase/wheels
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_VERSION)-avx2

# Two pytest workers, a test file each at a time (a file's module fixtures, such as a served
# app, stay with one worker), and the 15 slowest tests named at the end; PYTEST_ARGS= runs
# them one after the other.
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=15
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: pgvector run test install demo lint docs bench bench-long system-deps clean

run: $(STAMP)
	$(PY) -m data.store.migrate
	$(PY) app.py --server.address $(HOST) --server.port $(PORT) \
	  --server.headless true --browser.gatherUsageStats false

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(LLAMA_WHEEL): | $(VENV)/bin/python
	@mkdir -p $(WHEELS)
	@echo "Building llama-cpp-python $(LLAMA_VERSION) for AVX2 (about 6 minutes, once per machine)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-deps --no-cache-dir \
	  --wheel-dir $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(STAMP): requirements.txt $(LLAMA_WHEEL) | $(VENV)/bin/python
	$(PY) -m pip install --find-links $(WHEELS) --only-binary llama-cpp-python \
	  -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Debian packages the tests need: chromium for the browser tests, prometheus (and promtool) for
# the Prometheus tests, which start their own server on 127.0.0.1; docker-compose (1.29, which
# checks a compose file with no engine), nginx and openssl for the deploy/ checks. policy-rc.d
# keeps apt from starting Debian's prometheus and nginx services (they would listen on every
# interface); the tests only run `nginx -t` and their own Prometheus.
system-deps:
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	test -x /usr/lib/postgresql/15/bin/initdb || missing="$$missing postgresql-15"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; status=$$?; \
	  rm -f /usr/sbin/policy-rc.d; [ $$status = 0 ] || exit $$status; \
	fi
	@$(MAKE) --no-print-directory pgvector

# pgvector for MEMORY_BACKEND=pgvector. Debian bookworm packages none for Postgres 15, so it is
# built from Debian's own source tarball (trixie's pgvector, checksum pinned) against
# postgresql-server-dev-15, whose version matches the installed server (so the running server is
# not upgraded), and installed into the machine's Postgres 15. About a minute, once per machine.
# OPTFLAGS= keeps it portable (pgvector's default is -march=native).
PGVECTOR_VERSION := 0.8.0
PGVECTOR_SHA256 := 867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0
PG_BIN := /usr/lib/postgresql/15/bin

pgvector:
	@if [ ! -f /usr/share/postgresql/15/extension/vector.control ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "pgvector is missing; run: sudo make pgvector" >&2; exit 1; fi; \
	  echo "building pgvector $(PGVECTOR_VERSION) for Postgres 15"; \
	  server=$$(dpkg-query -W -f='$${Version}' postgresql-15); \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    "postgresql-server-dev-15=$$server" >/dev/null; status=$$?; \
	  rm -f /usr/sbin/policy-rc.d; [ $$status = 0 ] || exit $$status; \
	  work=$$(mktemp -d); \
	  curl -fsSL -o $$work/pgvector.tar.gz \
	    http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_$(PGVECTOR_VERSION).orig.tar.gz && \
	  echo "$(PGVECTOR_SHA256)  $$work/pgvector.tar.gz" | sha256sum -c --quiet && \
	  tar xzf $$work/pgvector.tar.gz -C $$work && \
	  $(MAKE) -s -C $$work/pgvector-$(PGVECTOR_VERSION) PG_CONFIG=$(PG_BIN)/pg_config OPTFLAGS= >/dev/null && \
	  $(MAKE) -s -C $$work/pgvector-$(PGVECTOR_VERSION) PG_CONFIG=$(PG_BIN)/pg_config install >/dev/null; \
	  status=$$?; rm -rf $$work; exit $$status; \
	fi

demo: $(STAMP)
	$(PY) -m data.store.demo $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (docs/, mkdocs.yml) into .site/; --strict fails on a broken link or a
# page missing from the navigation, as in `make test`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) bench/record.py $(ARGS)
	$(PY) bench/turn.py
	$(PY) bench/memory.py
	$(PY) bench/turn_overhead.py
	$(PY) bench/support.py

# The 33-turn long conversation on the embedded model's full window, with the checks of the
# suite's small-window fold test; exits non-zero when one fails (10 to 20 minutes).
bench-long: $(STAMP)
	$(PY) bench/long_conversation.py $(ARGS)

clean:
	rm -rf $(VENV) .data .site .pytest_cache .mypy_cache .ruff_cache
