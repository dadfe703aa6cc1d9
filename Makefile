# minikvm: set up, run, test and document — all inside .venv, because
# Debian's python3 refuses `pip install` outside a virtual environment (PEP 668).
#
#   make demo   build a static hello and run it in the sandbox (the main job)
#   make test   run the test suite
#   make docs   build the docs strictly (nitpicky, warnings are errors)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: reinstall when pyproject.toml changes.
INSTALLED := $(VENV)/.installed

.PHONY: venv demo test docs clean

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "$(PYTHON) cannot create virtual environments: install python3-venv" \
	       "(sudo apt-get install python3-venv) and run make again" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	# Bytecode for every module now: minikvm imports some after its
	# Landlock walls are up, when Python may no longer write the cache.
	$(BIN)/python -m compileall -q minikvm
	touch $@

# The main job: a static C program, built here, run in the sandbox with
# read-write access to build/ and nothing else.
demo: venv
	mkdir -p build
	cc -static -O2 -o build/hello tests/programs/hello.c
	cd build && ../$(BIN)/minikvm run --here -- ./hello

test: venv
	$(BIN)/python -m pytest -q

docs: venv
	$(BIN)/python -m sphinx -n -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build docs/reference/api *.egg-info build
