// kubesplit-render writes the files generated from the role descriptions.
//
//	kubesplit-render compose TAG    the compose file, on stdout
package main

import (
	"fmt"
	"os"

	"github.com/kubesplit/kubesplit/roles/compose"
)

func main() {
	if len(os.Args) != 3 || os.Args[1] != "compose" {
		fmt.Fprintln(os.Stderr, "usage: kubesplit-render compose DEFAULT_TAG")
		os.Exit(2)
	}
	b, err := compose.Render(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubesplit-render:", err)
		os.Exit(1)
	}
	os.Stdout.Write(b)
}
