# A kubesplit node: the agent with kubelet and kube-proxy in it, containerd,
# the runc shim and ctr, the CNI plugins, and the preloaded sandbox image, on
# a minimal Debian (runc, iptables, mount) made by hack/node-base.sh.
ARG NODE_BASE=kubesplit/node-base:bookworm
FROM ${NODE_BASE}
COPY kubesplit-node kubesplit-node-supervisor containerd containerd-shim-runc-v2 ctr /usr/local/bin/
COPY cni/ /usr/local/bin/cni/
COPY images/ /usr/share/kubesplit/images/
VOLUME ["/var/lib/containerd", "/var/lib/kubelet"]
LABEL io.kubesplit.image=node
ENTRYPOINT ["/usr/local/bin/kubesplit-node-supervisor"]
