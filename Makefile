# The README's commands. Each one does its own set-up on a fresh Debian machine.
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist processes; each starts its own RabbitMQ node and PostgreSQL server. The
# integration tests mostly wait on processes and the network: on 2 cores, 3 of them kept the
# cores 62% busy (11 min 59 s), 4 of them 80% (10 min 0 s).
TEST_WORKERS ?= 4

.PHONY: run test lint bench clean

$(BIN)/.installed: pyproject.toml
	scripts/ensure-venv $(VENV)
	touch $@

# Each process compiles aico's modules again when it starts unless their bytecode is there (an
# environment with PYTHONDONTWRITEBYTECODE set never writes it): 0.2 s of CPU per process.
COMPILE := $(BIN)/python -m compileall -q -j 0 aico bot core workers

## run: install, then start the whole stack with a local console (aico dev)
run: $(BIN)/.installed
	$(COMPILE)
	scripts/ensure-rabbitmq --optional
	$(BIN)/aico dev

## test: install, then lint and run every test against private RabbitMQ and PostgreSQL servers
test: $(BIN)/.installed
	$(COMPILE) tests
	scripts/ensure-rabbitmq
	scripts/ensure-postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS)

## lint: ruff, the import contracts and mypy only
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

## bench: the end-to-end benchmark (figures in the README)
bench: $(BIN)/.installed
	$(COMPILE)
	scripts/ensure-rabbitmq
	$(BIN)/python -m bench.e2e

clean:
	rm -rf $(VENV) .aico .pytest_cache .ruff_cache
