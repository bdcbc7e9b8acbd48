# kubesplit apiserver: one static binary, nothing else.
FROM scratch
COPY apiserver /usr/local/bin/apiserver
LABEL io.kubesplit.image=apiserver
ENTRYPOINT ["/usr/local/bin/apiserver"]
