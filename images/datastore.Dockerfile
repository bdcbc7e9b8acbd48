# kubesplit datastore: one static binary, nothing else.
FROM scratch
COPY datastore /usr/local/bin/datastore
ENTRYPOINT ["/usr/local/bin/datastore"]
