# kubesplit: thin targets over hack/ scripts. `make help` lists them.
SHELL := /usr/bin/env bash
DATASTORE ?= sqlite

.PHONY: help deps build images images-all run test test-unit test-integration test-nodes test-multiarch verify bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install what builds and tests need (Debian packages; run as root)
	hack/deps.sh

build: ## build every binary into bin/ (PLATFORMS="linux/amd64 linux/arm64" adds bin/linux-ARCH/)
	hack/build.sh

images: build ## build every image offline for the host (or PLATFORMS=...) and load it into docker
	hack/images.sh

images-all: ## linux/amd64 + linux/arm64 images: dist/kubesplit-images-VERSION.tar (OCI + docker load)
	PLATFORMS="linux/amd64 linux/arm64" hack/build.sh
	PLATFORMS="linux/amd64 linux/arm64" hack/images.sh

run: build ## start the five roles as host processes (DATASTORE=sqlite|etcd|DSN); Ctrl-C stops all
	bin/kubesplit run --bin-dir bin --data-dir .kubesplit --datastore '$(DATASTORE)'

test: ## everything CI runs: verify, unit, integration, node and arm64 image tests
	hack/test.sh all

test-unit: ## unit tests of every module (no processes started)
	hack/test.sh unit

test-integration: ## real role processes driven through client-go and etcd
	hack/test.sh integration

test-nodes: ## node containers behind the tunnel gateway (real Docker)
	hack/test.sh nodes

test-multiarch: ## the arm64 apiserver and datastore images, emulated by qemu-user-static, reach /readyz
	hack/test.sh multiarch

verify: ## gofmt, go.work in sync, each module builds alone (GOWORK=off)
	hack/verify.sh

bench: build ## benchmarks: SQLite vs embedded etcd; table + results/*.json
	hack/bench.sh

clean: ## remove binaries, image archives and the local cluster's data
	rm -rf bin dist .kubesplit
