# A small test workload (e2e/cmd/testapp): HTTP server, client, exit codes.
FROM scratch
COPY testapp /testapp
LABEL io.kubesplit.image=testapp
ENTRYPOINT ["/testapp"]
CMD ["serve"]
