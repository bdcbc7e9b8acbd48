# kubesplit scheduler: one static binary, nothing else.
FROM scratch
COPY scheduler /usr/local/bin/scheduler
ENTRYPOINT ["/usr/local/bin/scheduler"]
