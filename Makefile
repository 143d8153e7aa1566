# The commands users type. Each one sets up what it needs first.
#   make demo   the whole pipeline on this machine (simulated Pis → … → dashboard)
#   make test   the whole suite
#   make bench  benchmarks, one name=value figure per line
#   make check  ruff and mypy
#   make dashboard  bundle dashboard/ into dashboard/dist (esbuild)
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
NODE_STAMP  := node_modules/.installed
PY_INPUTS   := pyproject.toml edge/modules/enviro_sensor/pyproject.toml \
               cloud/sink/pyproject.toml sim/pyproject.toml
PIP         := $(PY) -m pip --disable-pip-version-check --quiet
# iotedgedev (the deploy tests expand the IoT Edge templates with it) in a venv of its own.
TOOLS_VENV  := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
TOOLS_REQS  := tests/deploy/requirements-iotedgedev.txt

.PHONY: help venv node tools dashboard test demo bench check contract clean

help:
	@echo "make demo   - run the whole pipeline locally (DEMO_ARGS=..., ENVIROMON_DEVICES=N)"
	@echo "make test   - set up .venv and node_modules, run the whole suite"
	@echo "make bench  - run the benchmarks (name=value lines)"
	@echo "make check  - ruff and mypy"
	@echo "make tools  - set up .venv-tools (iotedgedev, for the deploy tests)"
	@echo "make dashboard - build the dashboard into dashboard/dist"

$(STAMP): $(PY_INPUTS)
	@PYBIN=$$(tools/find-python) || exit 1; \
	  if [ ! -x $(PY) ]; then echo "creating $(VENV) with $$PYBIN"; "$$PYBIN" -m venv $(VENV); fi
	$(PIP) install --upgrade "pip>=24"
	$(PIP) install -e ".[dev]" \
	    -e edge/modules/enviro_sensor \
	    -e cloud/sink \
	    -e sim
	@touch $@

venv: $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	@command -v node >/dev/null || { echo "Node.js 20+ is needed (for Azurite)." >&2; exit 1; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || \
	  { echo "Node.js 20+ is needed; found $$(node --version)." >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node: $(NODE_STAMP)

$(TOOLS_STAMP): $(TOOLS_REQS)
	@PYBIN=$$(tools/find-python) || exit 1; \
	  if [ ! -x $(TOOLS_VENV)/bin/python ]; then echo "creating $(TOOLS_VENV) with $$PYBIN"; "$$PYBIN" -m venv $(TOOLS_VENV); fi
	$(TOOLS_VENV)/bin/python -m pip --disable-pip-version-check --quiet install -r $(TOOLS_REQS)
	@touch $@

tools: $(TOOLS_STAMP)

# The dashboard's static site: npm libraries bundled into dashboard/dist (git-ignored), no CDN.
DASH_BUNDLE := dashboard/dist/app.js
DASH_INPUTS := $(wildcard dashboard/src/*) $(wildcard dashboard/contract/*.json) \
               dashboard/index.html dashboard/build.mjs dashboard/config.example.json
$(DASH_BUNDLE): $(NODE_STAMP) $(DASH_INPUTS)
	node dashboard/build.mjs

dashboard: $(DASH_BUNDLE)

test: venv node tools dashboard
	$(PY) -m pytest

# Services, then simulated Pis, until Ctrl-C (docs/demo.md). DEMO_ARGS: e.g. --api-port 7072.
demo: venv node dashboard
	$(VENV)/bin/enviromon demo $(DEMO_ARGS)

bench: venv node dashboard
	$(PY) bench/run.py

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy edge/modules/enviro_sensor/src cloud/sink sim/src

# The telemetry contract lives in contract/; each deployable part ships a copy, because each
# folder is a build context of its own. tests/contract checks the copies have not drifted.
CONTRACT_COPIES := edge/modules/enviro_sensor/src/enviro_sensor/contract cloud/sink/enviromon_sink/contract dashboard/contract sim/src/enviromon_sim/contract
contract:
	@for d in $(CONTRACT_COPIES); do mkdir -p $$d && cp contract/*.json $$d/; done
	@echo "contract copied to: $(CONTRACT_COPIES)"

clean:
	rm -rf $(VENV) $(TOOLS_VENV) node_modules dashboard/dist .artifacts .pytest_cache .mypy_cache .ruff_cache .hypothesis
