# The README's commands. `make lab` sets up this host and brings up the default lab;
# `make test` sets up this host and runs the test suite CI runs.
PYTEST = python3 -m pytest

.PHONY: setup lab test test-fast test-slow e2e bench down

setup:
	bash .ci/setup-host.sh

lab: setup
	build-images --all
	lab up --wait --timeout 5400  # controller first boot under TCG takes tens of minutes
	lab verify
	@echo "make lab: the cloud is up and verified. 'lab status' lists the nodes, 'lab ssh controller'"
	@echo "logs in (admin credentials: admin-openrc in the lab's state directory), 'make down' removes it."

down:
	lab down

test: setup
	$(PYTEST) -m "not e2e and not long"

test-fast:
	$(PYTEST) -m "not slow and not libvirt and not e2e and not long"

test-slow: setup
	$(PYTEST) -m "slow or libvirt"

e2e:
	bash .ci/setup-host.sh --e2e
	$(PYTEST) -m e2e

bench: setup
	python3 bench/bench_render.py
