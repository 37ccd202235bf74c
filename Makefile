# Scaleshop: `make up` runs the local stack, `make test` runs the tests. See README.md.
SHELL := /bin/bash
PY := .cache/venv/bin/python
SERVICE ?=
N ?=

.PHONY: help install up down status scale logs test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## install every server and the Python env into .cache (idempotent)
	@bash stack/install.sh

up: install  ## start the local stack and print the gateway URL
	@$(PY) -m stack up

down:  ## stop the local stack (data is kept)
	@if [ -x $(PY) ]; then $(PY) -m stack down; fi

status:  ## every process: port, pid, state, health, CPU limit
	@$(PY) -m stack status

scale:  ## make scale SERVICE=user N=4
	@test -n "$(SERVICE)" -a -n "$(N)" || { echo "usage: make scale SERVICE=user|catalog|worker N=<replicas>"; exit 2; }
	@$(PY) -m stack scale $(SERVICE)=$(N)

logs:  ## make logs [SERVICE=user|user-1|kafka|gateway|...]
	@$(PY) -m stack logs $(SERVICE)

test: install  ## run the test suite (starts its own stack on other ports)
	@$(PY) -m pytest

clean: down  ## stop the stack and delete its data
	rm -rf .stack
