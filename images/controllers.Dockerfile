# kubesplit controllers: one static binary, nothing else.
FROM scratch
COPY controllers /usr/local/bin/controllers
LABEL io.kubesplit.image=controllers
ENTRYPOINT ["/usr/local/bin/controllers"]
