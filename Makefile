# medseg: the two commands a new user runs are `make demo` and `make test`.
# Both create .venv when it is missing and install everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
INSTALLED := $(VENV)/.medseg-installed
EXTRAS ?= dev,distributed,general,pacs,yolo
APT_PACKAGES := dcm2niix dicom3tools chromium orthanc orthanc-dicomweb
# Tests and the demo never touch the network (model hubs, dataset downloads).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: demo test bench fuzz install apt-deps nuclei-data clean help

help:
	@echo "make demo   - synthetic CT cohort -> train -> batch segment -> evaluate -> report"
	@echo "make test   - run the whole test suite"
	@echo "make bench  - run the benchmarks under benchmarks/"
	@echo "make fuzz   - mutation fuzz of medseg.io.load (FUZZ_COUNT mutants, default 2000; prints the outcome table)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch and torchvision are pinned as a pair here (pyproject allows a range).
# sam2 is an sdist whose build requires torch: build it against the installed torch,
# without build isolation (which would download another torch) and without its CUDA extension.
$(INSTALLED): pyproject.toml | $(PY)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[$(EXTRAS)]'
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation --no-deps 'sam2>=1.0'
	$(PIP) install -q 'hydra-core>=1.3' 'iopath>=0.1.10'
	# the official Cityscapes label table for tests/test_image_datasets.py; its own requirements (the
	# obsolete typing backport, pyquaternion, ...) are not needed by cityscapesscripts.helpers.labels
	$(PIP) install -q --no-deps 'cityscapesScripts>=2.2'
	touch $(INSTALLED)

install: $(INSTALLED)

# A real annotated ordinary image for tests and the CPU pipeline figures: the 2018 Data Science Bowl nuclei image
# and its expert mask, which stardist (BSD-3) ships. Only the archive is fetched from PyPI, never installed
# (stardist needs TensorFlow); medseg.data.nuclei reads the two files from it and checks their SHA-256.
NUCLEI_DIR := .cache/stardist
NUCLEI_FETCHED := $(NUCLEI_DIR)/.fetched
$(NUCLEI_FETCHED): | $(PY)
	$(PIP) download -q --no-deps --only-binary :all: -d $(NUCLEI_DIR) 'stardist==0.9.2'
	touch $@

nuclei-data: $(NUCLEI_FETCHED)

# Debian packages the tests compare against; installed when missing (needs root).
apt-deps:
	@missing=""; \
	command -v dcm2niix >/dev/null || missing="$$missing dcm2niix"; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v Orthanc >/dev/null || missing="$$missing orthanc"; \
	ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || missing="$$missing orthanc-dicomweb"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    case "$$missing" in *orthanc*) \
	      echo "stopping the system Orthanc service (the PACS tests start their own)"; \
	      if command -v systemctl >/dev/null; then systemctl disable --now orthanc >/dev/null 2>&1 || true; fi; \
	      service orthanc stop >/dev/null 2>&1 || true;; \
	    esac; \
	  else \
	    echo "warning: not root, cannot install$$missing; tests needing them will be skipped"; \
	  fi; \
	fi

test: $(INSTALLED) apt-deps $(NUCLEI_FETCHED)
	$(PY) -m pytest -q

demo: $(INSTALLED)
	$(VENV)/bin/medseg demo --output demo_output

bench: $(INSTALLED) apt-deps $(NUCLEI_FETCHED)
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

FUZZ_COUNT ?= 2000
FUZZ_SEED ?= 1
fuzz: $(INSTALLED)
	$(PY) -m tests.fuzz.fuzz --count $(FUZZ_COUNT) --seed $(FUZZ_SEED) --timeout 20 --keep fuzz-findings

clean:
	rm -rf $(VENV) demo_output .pytest_cache
