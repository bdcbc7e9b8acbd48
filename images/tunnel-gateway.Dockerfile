# kubesplit tunnel-gateway: one static binary, nothing else.
FROM scratch
COPY tunnel-gateway /usr/local/bin/tunnel-gateway
ENTRYPOINT ["/usr/local/bin/tunnel-gateway"]
