# kubesplit datastore: one static binary, nothing else.
FROM scratch
COPY datastore /usr/local/bin/datastore
LABEL io.kubesplit.image=datastore
ENTRYPOINT ["/usr/local/bin/datastore"]
