#!/usr/bin/env bash
# make bench: control-plane benchmarks (SQLite vs embedded etcd, in one run),
# then the node benchmarks (pod startup, agent RSS, exec via tunnel vs direct, reconnect),
# then the compose cluster (make up to first pod and DNS, idle memory, image sizes),
# then testcluster.Run to a ready cluster beside compose (median of 5),
# then the control-plane box beside a container per role,
# then the addons: a HelmChart beside the helm CLI, Traefik's memory and latency,
# then NetworkPolicy enforcement: apply time, sync time and connect() at 0/100/1000 policies,
# then the Service proxies side by side, then the hosted control plane (deploy/helm).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBESPLIT_BIN_DIR=$PWD/bin
go run ./e2e/cmd/bench -out results "$@"
# node side: node containers behind the tunnel gateway (needs Docker and the images)
hack/images.sh
go run ./e2e/cmd/nodebench -out results
# the compose dev cluster: cold and warm `make up`, idle memory, image sizes
go run ./e2e/cmd/composebench -out results
# testcluster.Run (1 and 3 nodes, median of 5) beside the compose cluster's `make up`
(cd e2e/suite && GOWORK=off go run ./cmd/runbench -out ../../results -root ../..)
# the control-plane box (static pods) beside a container per role: start, idle memory, kubesplit upgrade
(cd e2e/suite && GOWORK=off go run ./cmd/boxbench -out ../../results)
# the helm CLI (the same Helm module as the HelmChart controller) for the addons' baseline
helm=$(hack/helm.sh)
(cd e2e/suite && GOWORK=off go run ./cmd/addonbench -out ../../results -helm "$helm")
# NetworkPolicy: a new policy to loaded rules, and connect() through the chain, beside no policy
(cd e2e/suite && GOWORK=off go run ./cmd/netpolbench -out ../../results)
# Service proxies side by side: kube-proxy iptables (node-1) and the eBPF proxy (node-2)
(cd e2e/suite && GOWORK=off go run ./cmd/svcbench -out ../../results)
# the hosted control plane (deploy/helm) on a testcluster host, per datastore mode, beside the host's own control plane
(cd e2e/suite && GOWORK=off go run ./cmd/hostedbench -out ../../results -helm "$helm")
