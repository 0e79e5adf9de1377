# The two commands of the README. Both set up what they need on a fresh Debian machine (as root) and
# return quickly when it is already there.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: demo test unit setup stack venv bench clean

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -m "not integration"

bench: setup
	$(PY) bench/score.py

setup: venv stack

stack:
	bash scripts/local-stack.sh up

venv: $(VENV)/.installed

$(VENV)/.installed: requirements*.txt model_api/requirements*.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .  # the `shipbot` command, .venv/bin/shipbot, from this checkout
	touch $@

clean:
	rm -rf $(VENV) build .pytest_cache
