# surgewatch: `make demo` runs the embedded demo, `make test` runs every check. Both set up first.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS   := prometheus prometheus-alertmanager

.PHONY: setup debs demo test lint bench clean

SCHEMA_TOOLS := tools/grafana-schema/node_modules/.package-lock.json

setup: $(STAMP) debs $(SCHEMA_TOOLS)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Node tooling that regenerates the committed dashboard schema (tools/grafana-schema); optional:
# without npm the schema stays as committed and its regeneration test is skipped.
$(SCHEMA_TOOLS): tools/grafana-schema/package-lock.json
	@if command -v npm >/dev/null; then \
	  (cd tools/grafana-schema && npm ci --no-audit --no-fund --silent) \
	    || echo "npm ci failed in tools/grafana-schema: the dashboard schema stays as committed"; \
	else echo "npm not found: the dashboard schema stays as committed"; fi

# Debian packages, installed only when a binary is missing.
debs:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null \
	   || ! command -v prometheus-alertmanager >/dev/null || ! command -v amtool >/dev/null; then \
	  echo "installing $(DEBS) ..."; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(DEBS); \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium (renders reports in tests) ..."; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; \
	fi

demo: setup
	$(VENV)/bin/surgewatch demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src

test: lint
	$(PY) -m pytest -q --durations=20

bench: setup
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .surgewatch .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Detection quality on the simulated scenarios (bench/detection.py; --scale via ARGS).
.PHONY: detection
detection: setup
	$(PY) bench/detection.py $(ARGS)

# Soak: one worker on live events at a steady rate (default 20,000/s for 10 min); RSS, window-close
# delay and lag checked after a warm-up (bench/soak.py; options via ARGS, e.g. ARGS="--minutes 2
# --warmup 0.5"). Too long for `make test`.
.PHONY: soak
soak: setup
	$(PY) bench/soak.py $(ARGS)
