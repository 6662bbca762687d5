# humigraph: `make demo` runs the whole stack on embedded defaults, `make test` runs every test.
# Both install what they need first (see `make setup`).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
PORT ?=
CHIP ?= auto
FIRMWARE ?=
CONFIG ?=

.PHONY: setup test lint pytest demo flash console bench gateway clean mosquitto need-mosquitto train quantize browser

setup: $(STAMP) mosquitto browser

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "humigraph needs Python >= 3.10 as '$(PYTHON)'; install it or run make PYTHON=python3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || \
	  { echo "could not create $(VENV): install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[board,demo,dev,edge,postgres,train,plot]'
	@touch $@

# Debian's mosquitto: installed when missing and we are root, otherwise we say what to install.
mosquitto:
	@if ! command -v mosquitto >/dev/null && ! test -x /usr/sbin/mosquitto; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's mosquitto and mosquitto-clients"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	  else \
	    echo "note: mosquitto is missing and we are not root; the demo falls back to the embedded amqtt broker."; \
	    echo "      For the tests install it: sudo apt-get install mosquitto mosquitto-clients"; \
	  fi; \
	fi

# Debian's chromium and chromium-driver for the dashboard's browser test (tests/e2e/test_dashboard_browser.py):
# installed when missing and we are root, otherwise we say what to install (that test then skips).
browser:
	@if ! test -x /usr/bin/chromium || ! test -x /usr/bin/chromedriver; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium and chromium-driver (for the dashboard's browser test)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "note: chromium is missing and we are not root; the dashboard's browser test will skip."; \
	    echo "      To run it: sudo apt-get install chromium chromium-driver"; \
	  fi; \
	fi

need-mosquitto: mosquitto
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { echo "make test needs mosquitto: sudo apt-get install mosquitto mosquitto-clients"; exit 1; }

test: setup need-mosquitto lint pytest

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard host tests tools)
	$(BIN)/ruff format --check $(wildcard host tests tools)
	cd firmware && ../$(BIN)/pyright --typeshedpath "$$(../$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" --pythonpath ../$(PY) .
	$(BIN)/vermin --target=3.10- --no-tips --violations --eval-annotations host/humigraph

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/humigraph demo

flash: setup
	@test -n "$(PORT)" || { echo "usage: make flash PORT=/dev/ttyUSB0 [CHIP=esp32] [FIRMWARE=image.bin] [CONFIG=config.json] [NO_CONSOLE=1]"; exit 2; }
	$(BIN)/humigraph flash --port $(PORT) --chip $(CHIP) $(if $(FIRMWARE),--firmware $(FIRMWARE)) $(if $(CONFIG),--config $(CONFIG)) $(if $(NO_CONSOLE),--no-console)

console: setup
	@test -n "$(PORT)" || { echo "usage: make console PORT=/dev/ttyUSB0"; exit 2; }
	$(BIN)/humigraph console --port $(PORT)

# make bench [BENCH=firmware|ingest|model]
BENCH ?= firmware
bench: setup
	$(BIN)/humigraph bench $(BENCH)

# make gateway [GATEWAY_CONFIG=deploy/gateway.toml] [BROKER=mqtt://127.0.0.1:1883]: data under ./var
BROKER ?= mqtt://127.0.0.1:1883
GATEWAY_CONFIG ?=
gateway: setup
	$(BIN)/humigraph gateway $(if $(GATEWAY_CONFIG),--config $(GATEWAY_CONFIG),--broker $(BROKER) --data-dir var)

# The reasoning model: world simulator + the real datasets in $(DATA) when that folder exists.
# The world's boards read every 10 s, the firmware's default (six reads per 60 s model step).
# `make train` starts over (humigraph train itself resumes from build/model/checkpoint).
DATA ?= ../shared/data
WORLD_SPEC := world:1-12?days=1&step=10
MODEL_DATA = '$(WORLD_SPEC)' $(if $(wildcard $(DATA)/room-climate-A),room-climate:$(DATA)/room-climate-A) \
	$(if $(wildcard $(DATA)/uci-occupancy),uci-occupancy:$(DATA)/uci-occupancy)

train: setup
	rm -rf build/model
	$(BIN)/humigraph train --data $(MODEL_DATA) --out build/model --epochs 40 --seed 0

quantize: setup
	$(BIN)/humigraph quantize --model build/model/savedmodel --calibration $(MODEL_DATA) \
	  --out models/humigraph-int8.tflite

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache test-output
