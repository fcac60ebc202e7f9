# tenfold: `make up` converges the stack on this machine's Docker engine; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# sslyze lives in a venv of its own: its cryptography pin conflicts with the project's (requirements-sslyze.txt).
SSLYZE_VENV := .venv-sslyze
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Extra arguments for ansible-playbook, e.g. make up ARGS="--check --diff".
ARGS ?=
MOLECULE_SCENARIOS := images app_pools tls nginx_lb monitor backup
# The collection tenfold.stack: its source, and the tarball `make collection` builds of it.
COLLECTION := collections/ansible_collections/tenfold/stack
COLLECTION_VERSION := $(shell sed -n 's/^version: *//p' $(COLLECTION)/galaxy.yml)
COLLECTION_TARBALL := build/tenfold-stack-$(COLLECTION_VERSION).tar.gz
# The control machine's system packages; the last four are for the test fleet (scripts/test-fleet.sh):
# an sshd per fleet host, ip, the storage driver of the fleet hosts' Docker engines, and logrotate, which
# site.yml would install on each fleet host, which shares the controller's files but reaches no mirror.
DEB_PACKAGES := python3-venv mmdebstrap curl testssl.sh nftables openssh-server iproute2 fuse-overlayfs \
	logrotate

.PHONY: help deps venv sslyze collection images up down lint sanity test test-unit test-integration test-long \
	test-molecule test-fleet test-fleet-short clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: ## Install the control machine's system packages (Debian; needs root)
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The project itself goes in editable: the monitor package and its console script tenfold-monitor, run from
# this checkout's files (pyproject.toml: which files; a change to it reinstalls).
$(BIN)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install -q -e . -c constraints.txt
	touch $@

venv: $(BIN)/.installed ## Create the virtual environment from the pinned requirements, with the monitor package

$(SSLYZE_VENV)/.installed: requirements-sslyze.txt
	$(PYTHON) -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/pip install -q --upgrade pip
	$(SSLYZE_VENV)/bin/pip install -q --no-deps -r requirements-sslyze.txt
	$(SSLYZE_VENV)/bin/pip check
	touch $@

sslyze: $(SSLYZE_VENV)/.installed ## The TLS scanner sslyze, in a venv of its own (.venv-sslyze)

$(COLLECTION_TARBALL): $(BIN)/.installed $(shell find $(COLLECTION) -type f -not -path '*/__pycache__/*' -not -path '*/tests/output/*')
	$(BIN)/ansible-galaxy collection build $(COLLECTION) --output-path build --force

collection: $(COLLECTION_TARBALL) ## Build the collection tenfold.stack (build/tenfold-stack-<version>.tar.gz)

images: deps venv ## Build the images only (each is rebuilt only when its sources change)
	$(BIN)/ansible-playbook playbooks/images.yml

up: deps venv ## Build the images and converge the stack (site.yml) on this machine
	$(BIN)/ansible-playbook site.yml $(ARGS)

down: venv ## Remove everything the stack created, and nothing else
	$(BIN)/ansible-playbook playbooks/down.yml $(ARGS)

lint: venv ## ruff, ansible-lint (production profile), and shellcheck where it is installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint
	@if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh; else echo "shellcheck: not installed, skipped"; fi

# ansible-test bootstraps pip into each sanity test's venv with a get-pip.py it downloads from
# ci-files.testing.ansible.com, which this machine cannot reach; it takes a cached copy when there is one.
# Where there is none, this makes one from PyPI's pip wheel (tests/ansible-test-get-pip.py).
ANSIBLE_TEST_PIP := 24.2
ANSIBLE_TEST_CACHE := $(HOME)/.ansible/test/cache
GET_PIP := $(ANSIBLE_TEST_CACHE)/get_pip_$(subst .,_,$(ANSIBLE_TEST_PIP)).py
$(GET_PIP):
	mkdir -p $(ANSIBLE_TEST_CACHE)
	$(BIN)/pip download -q --no-deps pip==$(ANSIBLE_TEST_PIP) -d $(ANSIBLE_TEST_CACHE)
	sed 's#^PIP_WHEEL = .*#PIP_WHEEL = "$(ANSIBLE_TEST_CACHE)/pip-$(ANSIBLE_TEST_PIP)-py3-none-any.whl"#' \
	  tests/ansible-test-get-pip.py > $@

# ansible-test wants the collection at a path ending ansible_collections/tenfold/stack and runs from there.
# Every sanity test but pslint (PowerShell); each runs in a venv of its own that ansible-test installs from
# PyPI once (~/.ansible/test/venv). tests/sanity/ignore-2.19.txt says why each ignored finding is.
sanity: venv $(GET_PIP) ## ansible-test sanity on the collection (about 2 min)
	cd $(COLLECTION) && $(CURDIR)/$(BIN)/ansible-test sanity --python 3.11 --color no --skip-test pslint

test-unit: images ## Unit tests (no running stack; the config render tests run nginx -t in the nginx image)
	$(BIN)/pytest -q --durations=10 tests/unit

test-integration: deps venv sslyze ## Integration tests against a stack of their own on the real Docker engine
	$(BIN)/pytest -q --durations=25 -m "not long" tests/integration

test-long: deps venv sslyze ## The long integration tests (20 scale events, whole-stack faults...; about 16 min)
	$(BIN)/pytest -q --durations=25 -m long tests/integration

test-molecule: venv ## Each role's molecule scenario (converge, idempotence, testinfra verify)
	@set -e; for s in $(MOLECULE_SCENARIOS); do \
	  echo "== molecule scenario $$s"; \
	  $(BIN)/molecule test -s $$s || { $(BIN)/molecule cleanup -s $$s >/dev/null 2>&1; exit 1; }; \
	done

# The suite takes its fleet down itself; the down after a failure is for a pytest that died before it could.
test-fleet-short: deps venv images ## The short fleet tests: a fleet of three hosts up, the stack on it, down (about 3 min)
	$(BIN)/pytest -q --durations=10 -m "fleet and not long" tests/fleet || { scripts/test-fleet.sh down; exit 1; }

test-fleet: deps venv images ## The whole fleet suite (also every image to every fleet host)
	$(BIN)/pytest -q --durations=15 -m fleet tests/fleet || { scripts/test-fleet.sh down; exit 1; }

# The short fleet suite and molecule run side by side: they share no stack, port or namespace, and each
# waits on Ansible and Docker more than on the CPU. -O keeps each one's output together.
test: deps venv lint sanity test-unit test-integration ## Everything: lint, sanity, unit, integration, short fleet, molecule
	$(MAKE) --no-print-directory -j2 --output-sync=target test-fleet-short test-molecule

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) $(SSLYZE_VENV) .pytest_cache .ruff_cache tenfold.egg-info build $(COLLECTION)/tests/output
