# kubesplit: thin targets over hack/ scripts. `make help` lists them.
SHELL := /usr/bin/env bash
DATASTORE ?= sqlite

.PHONY: help deps build images images-all up down load certs run test test-unit test-integration test-nodes test-compose test-e2eframework test-suite test-multiarch verify bench clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install what builds and tests need (Debian packages; run as root)
	hack/deps.sh

build: ## build every binary into bin/ (PLATFORMS="linux/amd64 linux/arm64" adds bin/linux-ARCH/)
	hack/build.sh

images: build ## build every image offline for the host (or PLATFORMS=...) and load it into docker
	hack/images.sh

images-all: ## linux/amd64 + linux/arm64 images: dist/kubesplit-images-VERSION.tar (OCI + docker load)
	PLATFORMS="linux/amd64 linux/arm64" hack/build.sh
	PLATFORMS="linux/amd64 linux/arm64" hack/images.sh

up: ## dev cluster in Docker (deploy/compose): control plane + NODES=2 NAT'd nodes; builds images if missing
	hack/compose.sh up

down: ## stop the compose cluster; its volumes stay, so `make up` brings the same cluster back
	hack/compose.sh down

load: ## copy local Docker images onto every compose node: make load IMAGE="myapp:dev other:1"
	hack/compose.sh load $(IMAGE)

certs: ## the compose cluster's certificates: make certs (check), make certs CMD="rotate [NAME...]"
	hack/compose.sh certs $(or $(CMD),check)

run: build ## start the five roles as host processes (DATASTORE=sqlite|etcd|DSN); Ctrl-C stops all
	bin/kubesplit run --bin-dir bin --data-dir .kubesplit --datastore '$(DATASTORE)'

test: ## everything CI runs: verify, unit, integration, node, compose, e2e-framework and testcluster suite tests
	hack/test.sh all

test-unit: ## unit tests of every module (no processes started)
	hack/test.sh unit

test-integration: ## real role processes driven through client-go and etcd
	hack/test.sh integration

test-nodes: ## node containers behind the tunnel gateway (real Docker)
	hack/test.sh nodes

test-compose: ## the compose dev cluster: make up, DNS, Services, logs/exec, restarts, down/up (real Docker)
	hack/test.sh compose

test-e2eframework: ## a sigs.k8s.io/e2e-framework suite on the kubesplit cluster provider (testcluster/e2eframework; real Docker)
	hack/test.sh e2eframework

test-suite: ## the e2e suite on testcluster: every datastore backend, role upgrades, node partition, version skew (real Docker)
	hack/test.sh suite

test-multiarch: ## the arm64 apiserver and datastore images, emulated by qemu-user-static, reach /readyz (not in `make test`: ~10 min cold arm64 build)
	hack/test.sh multiarch

verify: ## gofmt, go.work in sync, each module builds alone (GOWORK=off)
	hack/verify.sh

bench: build ## benchmarks: SQLite vs etcd, node side, compose cluster (make up, memory, image sizes); tables + results/*.json
	hack/bench.sh

clean: ## remove the compose cluster (with its volumes), binaries, image archives and the local cluster's data
	if command -v docker >/dev/null; then hack/compose.sh clean; fi
	rm -rf bin dist .kubesplit
