# kubesplit controllers: one static binary, nothing else.
FROM scratch
COPY controllers /usr/local/bin/controllers
ENTRYPOINT ["/usr/local/bin/controllers"]
