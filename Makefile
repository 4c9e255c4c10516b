# napari-seal: the README's two commands are `make demo` and `make test`.
# Each sets up what it needs (Debian packages for a virtual display, a virtualenv,
# torch, the package with its extras) and is a no-op for steps already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.napari-seal-installed
OUT ?= demo-out
APT_PKGS := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-cursor0 libxkbcommon-x11-0 \
	libgl1 libegl1 libdbus-1-3 libfontconfig1

.PHONY: setup demo test test-slow lint clean-venv system-deps

system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[all,test]'
	@# exactly what users install: plain pip, triton included (CUDA torch wheels bring
	@# it); the package itself keeps triton's LLVM from clashing with Mesa's (docs/napari.md)
	touch $(STAMP)

setup: $(STAMP)

## The main job: the SEAL loop on the bundled her2st section, headless; writes $(OUT)/report.md
demo: setup
	$(MAKE) system-deps
	xvfb-run -a -s "-screen 0 1600x1200x24" $(VENV)/bin/napari-seal demo --out $(OUT)

## The test suite (slow-marked tests excluded; see test-slow)
test: setup
	$(MAKE) system-deps
	$(PY) -m pytest

## Slow tests: full-size encoders and long training (runs in `make test-slow` / nightly)
test-slow: setup
	$(PY) -m pytest -m slow

lint: setup
	$(PY) -m pip install -q "ruff==0.17.6" && $(VENV)/bin/ruff check src tests

clean-venv:
	rm -rf $(VENV)
