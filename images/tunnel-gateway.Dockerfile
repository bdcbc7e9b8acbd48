# kubesplit tunnel-gateway: one static binary, nothing else.
FROM scratch
COPY tunnel-gateway /usr/local/bin/tunnel-gateway
LABEL io.kubesplit.image=tunnel-gateway
ENTRYPOINT ["/usr/local/bin/tunnel-gateway"]
