# topo: the two set-up commands are `make generate` and `make test`; both create the virtualenv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The official AsyncAPI parser the tests validate generated/asyncapi/ with (dev/asyncapi/, pinned by its lockfile).
ASYNCAPI_PARSER := dev/asyncapi/node_modules/.package-lock.json

.PHONY: generate check test test-faults lint asyncapi-parser brokers-up brokers-down brokers-status cluster-up cluster-down cluster-status bench demo clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

generate: $(STAMP)
	$(BIN)/topo generate -t topology.yaml -o generated

check: $(STAMP)
	$(BIN)/topo generate -t topology.yaml -o generated --check

$(ASYNCAPI_PARSER): dev/asyncapi/package.json dev/asyncapi/package-lock.json
	cd dev/asyncapi && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

asyncapi-parser: $(ASYNCAPI_PARSER)

test: $(STAMP) $(ASYNCAPI_PARSER)
	$(MAKE) brokers-up
	$(BIN)/topo generate -t topology.yaml -o generated --check
	$(BIN)/pytest $(PYTEST_ARGS)

# The tests marked `cluster` (tests/cluster/: the cluster's commands, replication, the fault tests of
# docs/faults.md) on the local 3-node Kafka + RabbitMQ cluster; `make test` leaves them out. The
# cluster is stopped afterwards, whatever the outcome (its memory is freed; its data stay).
test-faults: $(STAMP)
	$(MAKE) brokers-up
	$(MAKE) cluster-up
	$(BIN)/pytest --cluster -m cluster $(PYTEST_ARGS); status=$$?; $(MAKE) cluster-down; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m dev.typecheck dev bench examples
	$(BIN)/python -m dev.layers

brokers-up:
	$(PYTHON) dev/brokers.py up $(BROKERS)

brokers-down:
	$(PYTHON) dev/brokers.py down $(BROKERS)

brokers-status:
	$(PYTHON) dev/brokers.py status $(BROKERS)

cluster-up:
	$(PYTHON) dev/brokers.py cluster up

cluster-down:
	$(PYTHON) dev/brokers.py cluster down

cluster-status:
	$(PYTHON) dev/brokers.py cluster status

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'  # bench/peers.py compares with FastStream
	$(MAKE) brokers-up
	$(BIN)/python -m bench $(BENCH)

# The explorer end to end on the local brokers (examples/demo.py): simulated producers, every group,
# retries and dead letters, a live table until Ctrl-C. DEMO_BROKER=rabbitmq; DEMO_ARGS="--rate 50 --seconds 60".
DEMO_BROKER ?= kafka
DEMO_ARGS ?=
demo: $(STAMP)
	$(MAKE) brokers-up BROKERS=$(DEMO_BROKER)
	$(BIN)/topo apply -t topology.yaml --broker $(DEMO_BROKER) --yes
	$(BIN)/python -m examples.demo -t topology.yaml --broker $(DEMO_BROKER) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .run dev/asyncapi/node_modules
