# kubesplit: thin targets over hack/ scripts. `make help` lists them.
SHELL := /usr/bin/env bash
DATASTORE ?= sqlite

.PHONY: help deps build images run test test-unit test-integration test-nodes verify bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install what builds and tests need (Debian packages; run as root)
	hack/deps.sh

build: ## build every binary into bin/ (one go build call)
	hack/build.sh

images: build ## build the role, node, pause and testapp images offline from bin/
	hack/images.sh

run: build ## start the five roles as host processes (DATASTORE=sqlite|etcd|DSN); Ctrl-C stops all
	bin/kubesplit run --bin-dir bin --data-dir .kubesplit --datastore '$(DATASTORE)'

test: ## everything CI runs: verify, unit, integration and node tests
	hack/test.sh all

test-unit: ## unit tests of every module (no processes started)
	hack/test.sh unit

test-integration: ## real role processes driven through client-go and etcd
	hack/test.sh integration

test-nodes: ## node containers behind the tunnel gateway (real Docker)
	hack/test.sh nodes

verify: ## gofmt, go.work in sync, each module builds alone (GOWORK=off)
	hack/verify.sh

bench: build ## benchmarks: SQLite vs embedded etcd; table + results/*.json
	hack/bench.sh

clean: ## remove binaries and the local cluster's data
	rm -rf bin .kubesplit
