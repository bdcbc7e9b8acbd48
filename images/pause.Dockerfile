# The pod sandbox image, built from node/cmd/pause.
FROM scratch
COPY pause /pause
USER 65535:65535
LABEL io.kubesplit.image=pause
ENTRYPOINT ["/pause"]
