# aidx: `make run` serves the demo models on 127.0.0.1:8000; `make test` runs the suite.
# Both install into .venv first and are quick when nothing changed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned: these exact wheels are on the build machines' disk.
TORCH := torch==2.14.1 torchvision==0.29.1
PKG_DIRS := inference gpu pipelines integrations adapters service
PYFILES := $(shell find $(PKG_DIRS) -name '*.py' 2>/dev/null | sort)
# Tests run inside a private network namespace with only loopback: no network at all.
NETNS := $(shell unshare -n true 2>/dev/null && echo "unshare -n")
# The workspace's npm libraries: pinned in UI_NPM, copied into the served UI_VENDOR.
UI_VENDOR := service/ui/vendor
UI_NPM := service/ui_vendor

.PHONY: install peers run test lint typecheck unit bench clean

install: $(VENV)/.linked $(UI_VENDOR)/.installed

$(VENV)/.deps: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet $(TORCH) -e '.[test]' --config-settings editable_mode=strict
	touch $@

# Strict editable installs link files one by one: relink when a module is added.
$(VENV)/.linked: $(VENV)/.deps $(PYFILES)
	$(BIN)/pip install --quiet --no-deps -e . --config-settings editable_mode=strict
	touch $@

# The workspace's browser libraries from npm (OpenSeadragon, the slide viewer), pinned by
# service/ui_vendor/package-lock.json, copied into the ignored service/ui/vendor/ that
# /ui/vendor/ serves (no CDN, nothing built). The wheel takes them when they are there.
$(UI_VENDOR)/.installed: $(UI_NPM)/package.json $(UI_NPM)/package-lock.json
	cd $(UI_NPM) && npm ci --no-audit --no-fund --loglevel=error
	rm -rf $(UI_VENDOR) && mkdir -p $(UI_VENDOR)
	cp -R $(UI_NPM)/node_modules/openseadragon/build/openseadragon $(UI_VENDOR)/openseadragon
	rm -f $(UI_VENDOR)/openseadragon/*.map
	touch $@

run: install
	AIDX_MODE=$${AIDX_MODE:-development} $(BIN)/aidx serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy inference gpu pipelines integrations adapters service

# Real peers for the integration tests (see tests/peers): Orthanc + DICOMweb, dcmtk,
# dicom3tools and PostgreSQL from Debian (installed only when missing), and the Medplum FHIR engine
# (pinned in integrations/fhir/peer/package.json) into the ignored .peers/fhir.
# NVIDIA Triton for the AIDX_BACKEND=triton tests and benchmarks/triton.py: nvidia-pytriton
# bundles Triton 2.51's tritonserver with the Python backend; it wants numpy<2, so it gets
# its own venv in the ignored .peers/pytriton (a test peer, not a dependency of aidx).
# wsidicomizer turns the test slides into DICOM WSI (tests/peers/wsidicomizer.py); it
# needs Debian's libturbojpeg0, and its wsidicom pins dicomweb-client<0.60 (aidx needs
# >=0.60), so it too gets its own venv, .peers/wsidicomizer.
PEERS_FHIR := .peers/fhir
PEERS_PYTRITON := .peers/pytriton
PEERS_WSIDICOMIZER := .peers/wsidicomizer
PYTRITON_PKGS := nvidia-pytriton==0.7.0 "numpy<2" onnxruntime
peers: $(PEERS_FHIR)/node_modules/.installed $(PEERS_PYTRITON)/.installed $(PEERS_WSIDICOMIZER)/.installed
	@if [ ! -x /usr/sbin/Orthanc ] || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
	    || ! command -v dciodvfy >/dev/null || ! command -v dsrdump >/dev/null \
	    || ! command -v strace >/dev/null || ! ldconfig -p | grep -q libturbojpeg.so.0; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends orthanc orthanc-dicomweb dcmtk dicom3tools strace \
	    libturbojpeg0; fi
	@# Headless Chromium and its WebDriver for the review workspace's browser tests.
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends chromium chromium-driver; fi
	@# promtool (Debian's prometheus package) checks and unit-tests deploy/prometheus's
	@# alerting rules and the dashboard's queries (tests/deploy). Only the tool is
	@# wanted: a server the package may start under systemd is stopped.
	@if ! command -v promtool >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends prometheus && \
	  { systemctl disable --now prometheus 2>/dev/null || true; }; fi
	@# PostgreSQL server binaries for tests/peers/postgres.py (each run makes its own
	@# cluster in a temp dir). Debian's install makes and starts a default cluster:
	@# stop and drop it, nothing of ours listens on 5432.
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends postgresql && \
	  pg_lsclusters -h | while read -r version cluster _; do \
	    pg_dropcluster --stop "$$version" "$$cluster"; done; fi

$(PEERS_FHIR)/node_modules/.installed: integrations/fhir/peer/package.json integrations/fhir/peer/package-lock.json
	mkdir -p $(PEERS_FHIR)
	cp integrations/fhir/peer/package.json integrations/fhir/peer/package-lock.json $(PEERS_FHIR)/
	cd $(PEERS_FHIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(PEERS_PYTRITON)/.installed:
	test -x $(PEERS_PYTRITON)/bin/python || $(PYTHON) -m venv $(PEERS_PYTRITON)
	$(PEERS_PYTRITON)/bin/pip install --quiet $(PYTRITON_PKGS)
	$(PEERS_PYTRITON)/bin/python -c "import pytriton.triton, onnxruntime, numpy; assert numpy.__version__ < '2'"
	touch $@

$(PEERS_WSIDICOMIZER)/.installed:
	test -x $(PEERS_WSIDICOMIZER)/bin/python || $(PYTHON) -m venv $(PEERS_WSIDICOMIZER)
	$(PEERS_WSIDICOMIZER)/bin/pip install --quiet wsidicomizer==0.26.1
	$(PEERS_WSIDICOMIZER)/bin/python -c "import wsidicomizer"
	touch $@

unit: install peers
	$(NETNS) bash -c 'if [ -n "$(NETNS)" ]; then ip link set lo up; fi; $(BIN)/python -m pytest $(PYTEST_ARGS)'

test: lint typecheck unit

bench: install
	$(BIN)/python benchmarks/batching.py

clean:
	rm -rf $(VENV) build dist var *.egg-info $(UI_VENDOR) $(UI_NPM)/node_modules
