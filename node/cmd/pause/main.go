// Command pause is the pod sandbox's process: it holds the pod's namespaces
// open, reaps any zombie that ends up as its child (it is PID 1 of the pod
// when the pod shares its PID namespace), and exits on SIGINT or SIGTERM.
// It is kubesplit's own so that the sandbox image is built here from source
// (no registry is needed); it is static and has no dependencies.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
