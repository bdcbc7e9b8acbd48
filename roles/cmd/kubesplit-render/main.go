// kubesplit-render writes the files generated from the role descriptions.
//
//	kubesplit-render compose TAG    the compose file, on stdout
//	kubesplit-render helm TAG       the Helm chart's files/roles.json, on stdout
package main

import (
	"fmt"
	"os"

	"github.com/kubesplit/kubesplit/roles/compose"
	"github.com/kubesplit/kubesplit/roles/helm"
)

func main() {
	render := map[string]func(string) ([]byte, error){"compose": compose.Render, "helm": helm.Render}
	if len(os.Args) != 3 || render[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: kubesplit-render compose|helm DEFAULT_TAG")
		os.Exit(2)
	}
	b, err := render[os.Args[1]](os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubesplit-render:", err)
		os.Exit(1)
	}
	os.Stdout.Write(b)
}
