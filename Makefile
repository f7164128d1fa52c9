# The two commands of the README: `make demo` and `make test`. Both start with `setup`,
# which is idempotent: apt packages listed under deps/apt/, and a venv with the project.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := $(shell cat deps/apt/*.txt | sed 's/\#.*//' | tr -s ' \n' ' ')
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo demo-real test lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(wildcard deps/apt/*.txt)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt-get install $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -q -o DPkg::Lock::Timeout=900 --no-install-recommends $$missing; \
	fi
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/atomicedge demo

# the OS-update act on a real boot: a qcow2 in QEMU (TCG), GRUB counting the boots (minutes)
demo-real: setup
	$(VENV)/bin/atomicedge demo --real

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -q

test: lint typecheck unit

bench: setup
	$(PY) bench/commit.py

clean:
	rm -rf $(VENV) build *.egg-info
