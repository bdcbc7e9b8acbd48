// Command datastore serves the etcd v3 API over mutual TLS from SQLite,
// PostgreSQL, MySQL (through kine) or embedded etcd.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/services/datastore/internal/app"
)

func main() { os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr)) }
