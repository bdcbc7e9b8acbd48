# kubesplit apiserver: one static binary, nothing else.
FROM scratch
COPY apiserver /usr/local/bin/apiserver
ENTRYPOINT ["/usr/local/bin/apiserver"]
