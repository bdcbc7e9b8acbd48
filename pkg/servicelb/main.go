package servicelb

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/kubesplit/kubesplit/pkg/lifecycle"
	"github.com/kubesplit/kubesplit/pkg/logging"
)

// Main runs a forwarder from its command line (the kubesplit/servicelb
// image's entrypoint) until SIGTERM, and returns the exit code.
func Main(args []string, stderr io.Writer) int {
	s, err := Parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "servicelb: %v\n", err)
		return 1
	}
	ctx, stop := lifecycle.SignalContext()
	defer stop()
	f := &Forwarder{Spec: s, Log: logging.New("servicelb", stderr, slog.LevelInfo)}
	if err := f.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "servicelb: %s: %v\n", s.Service, err)
		return 1
	}
	return 0
}
