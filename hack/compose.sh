#!/usr/bin/env bash
# The dev cluster of deploy/compose, driven the way `make` exposes it:
#   hack/compose.sh up      images if missing, then compose up, then wait until
#                           the API answers, NODES nodes are Ready and CoreDNS runs
#   hack/compose.sh down    stop and remove the containers; the volumes (cluster
#                           state, join token) stay, so `up` brings the same cluster back
#   hack/compose.sh clean   down, and remove the volumes and the host kubeconfig
#   hack/compose.sh load IMAGE...   copy local Docker images onto every node
#   hack/compose.sh certs check | rotate [NAME...]   the cluster's certificates
#                           (kubesplit certs, run in the init image on the data volume)
#   hack/compose.sh ps | logs ...   passed to compose
# Settings: NODES (default 2), KUBESPLIT_TAG, KUBESPLIT_API_PORT, TIMEOUT (s, default 300),
# and for a second cluster beside the first: COMPOSE_PROJECT_NAME,
# KUBESPLIT_KUBECONFIG_DIR, KUBESPLIT_EDGE_SUBNET and KUBESPLIT_GATEWAY_IP.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/deploy/compose"
. "$root/hack/versions.env"
export KUBESPLIT_TAG=${KUBESPLIT_TAG:-$KUBESPLIT_VERSION}
NODES=${NODES:-2}
TIMEOUT=${TIMEOUT:-300}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-kubesplit}
project=$COMPOSE_PROJECT_NAME
export KUBESPLIT_KUBECONFIG_DIR=${KUBESPLIT_KUBECONFIG_DIR:-$root/deploy/compose/kubeconfig}
kubeconfig=$KUBESPLIT_KUBECONFIG_DIR/admin.kubeconfig
images="kubesplit datastore apiserver scheduler controllers tunnel-gateway node"

# Compose v2 (the docker plugin) when there is one, else Debian's docker-compose v1.
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi

# Our own kubectl (same version as the cluster): a kubectl found on PATH may be
# anything (seen: a cloud SDK's wrapper that segfaulted on these calls).
kubectl() {
  "$root/bin/kubectl" --kubeconfig "$kubeconfig" "$@"
}

# Privileged containers are what users of kind and k3d expect, but some hosts
# (VMs without CAP_SYS_RESOURCE in their bounding set) refuse them: there the
# override grants every other capability instead. (The test runs as root: a
# non-root process gets no capabilities, so it would start either way.)
files() {
  local f=(-f docker-compose.yml)
  if ! docker run --rm --privileged --user 0:0 --network none "kubesplit/kubesplit:$KUBESPLIT_TAG" version >/dev/null 2>&1; then
    echo "compose: this Docker host refuses privileged containers; nodes get compose.no-privileged.yml's capabilities instead" >&2
    f+=(-f compose.no-privileged.yml)
  fi
  printf '%s\n' "${f[@]}"
}

node_containers() {
  docker ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=node"
}

wait_for() { # description command...
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "compose: timed out after ${TIMEOUT}s waiting for $what; see '${compose[*]} logs' in deploy/compose" >&2
      "${compose[@]}" ps >&2 || true
      return 1
    fi
    sleep 1
  done
}

# Status read right after the nodes restart may be the one from before they
# stopped: a node counts when its Ready heartbeat, and CoreDNS when its
# container started, after this up. When this up restarted no node (it
# recreated a control-plane role, say) what runs is what ran, and its status
# is current: then ready is enough (the kubelet renews the Ready heartbeat
# only every 5 minutes while nothing changes).
fresh_since() {
  local c started
  for c in $(node_containers); do
    started=$(docker inspect -f '{{.State.StartedAt}}' "$c" 2>/dev/null) || continue
    started=${started%%.*}; started=${started%Z}Z
    [[ "$started" < "$since" ]] || { echo "$since"; return; }
  done
}
nodes_ready() {
  [ "$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}{"\n"}{end}' 2>/dev/null |
    awk -v since="$(fresh_since)" '$1 == "True" && $2 >= since' | wc -l)" -ge "$NODES" ]
}
coredns_ready() {
  kubectl -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{range .items[*]}{.status.containerStatuses[0].ready} {.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}' 2>/dev/null |
    awk -v since="$(fresh_since)" '$1 == "true" && $2 >= since {ok=1} END {exit !ok}'
}

# On a cgroup v1 host the nodes share the host's hierarchies and each leaves
# its (now empty) cgroup root, /kubesplit-NODE, behind; remove this project's.
remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubesplit-"$project"-node-*; do
    [ -d "$d" ] && [ -w "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

case ${1:-} in
  up)
    "$root/hack/deps.sh" build   # Docker, compose and the build tools, if missing
    missing=()
    for i in $images coredns; do
      docker image inspect "kubesplit/$i:$KUBESPLIT_TAG" >/dev/null 2>&1 || missing+=("$i")
    done
    if ((${#missing[@]})); then
      echo "compose: building the missing images (${missing[*]}); the first build takes a while" >&2
      # (only what compose runs: the test-only images, such as postgres, are left out)
      (cd "$root" && hack/build.sh && IMAGES="$images coredns pause testapp" hack/images.sh)
    elif [ ! -x "$root/bin/kubectl" ]; then
      echo "compose: building kubectl (bin/kubectl), which the wait below and you will use" >&2
      (cd "$root" && hack/build.sh)
    fi
    mapfile -t f < <(files)
    start=$SECONDS since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    "${compose[@]}" "${f[@]}" up -d --scale "node=$NODES"
    wait_for "the admin kubeconfig" test -s "$kubeconfig"
    wait_for "the apiserver" kubectl get --raw /readyz
    wait_for "$NODES Ready nodes" nodes_ready
    wait_for "CoreDNS" coredns_ready
    echo "compose: cluster up in $((SECONDS - start))s"
    kubectl get nodes -o wide
    echo
    echo "export KUBECONFIG=$kubeconfig"
    ;;
  down)
    # the node image declares volumes (containerd's and the kubelet's state);
    # `down` alone would orphan one pair per node each time. A node's state
    # starts afresh with its container anyway (images come back from the
    # named images volume), so they go with their containers; named volumes stay.
    "${compose[@]}" rm --force --stop -v >/dev/null
    "${compose[@]}" down --remove-orphans
    remove_cgroups
    ;;
  clean)
    "${compose[@]}" rm --force --stop -v >/dev/null
    "${compose[@]}" down --remove-orphans --volumes
    remove_cgroups
    rm -f "$kubeconfig"
    ;;
  load)
    shift
    (($#)) || { echo "usage: hack/compose.sh load IMAGE... (make load IMAGE=...)" >&2; exit 2; }
    [ -x "$root/bin/kubesplit" ] || { echo "compose: bin/kubesplit is missing; run 'make build' first" >&2; exit 1; }
    exec "$root/bin/kubesplit" image load --cluster "$project" "$@"
    ;;
  certs)
    shift
    (($#)) || set -- check
    # as root, like init; renewed files keep their owner (the roles' uid)
    "${compose[@]}" run --rm --no-deps init certs "$@" --data-dir /var/lib/kubesplit
    ;;
  ps|logs|config)
    "${compose[@]}" "$@"
    ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
