# kubesplit scheduler: one static binary, nothing else.
FROM scratch
COPY scheduler /usr/local/bin/scheduler
LABEL io.kubesplit.image=scheduler
ENTRYPOINT ["/usr/local/bin/scheduler"]
