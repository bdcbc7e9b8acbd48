# kubesplit: thin targets over hack/ scripts. `make help` lists them.
SHELL := /usr/bin/env bash
DATASTORE ?= sqlite

.PHONY: help deps build run test test-unit test-integration verify bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install what builds and tests need (Debian packages; run as root)
	hack/deps.sh

build: ## build every binary into bin/ (one go build call)
	hack/build.sh

run: build ## start the five roles as host processes (DATASTORE=sqlite|etcd|DSN); Ctrl-C stops all
	bin/kubesplit run --bin-dir bin --data-dir .kubesplit --datastore '$(DATASTORE)'

test: ## everything CI runs: verify, unit and integration tests
	hack/test.sh all

test-unit: ## unit tests of every module (no processes started)
	hack/test.sh unit

test-integration: ## real role processes driven through client-go and etcd
	hack/test.sh integration

verify: ## gofmt, go.work in sync, each module builds alone (GOWORK=off)
	hack/verify.sh

bench: build ## benchmarks: SQLite vs embedded etcd; table + results/*.json
	hack/bench.sh

clean: ## remove binaries and the local cluster's data
	rm -rf bin .kubesplit
