package suite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/testcluster"
)

// helperEnv makes this test binary, run again as a child, start a cluster
// and wait to be killed instead of running tests (see TestMain).
const helperEnv = "KUBESPLIT_SUITE_HOLD_CLUSTER"

// TestMain runs the tests, or, in TestInterruptedTestsLeaveNothing's child
// process, holds a cluster until it is killed.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "" {
		os.Exit(m.Run())
	}
	c, err := testcluster.Run(context.Background(), testcluster.WithNodes(0))
	if err != nil {
		fmt.Println("holder:", err)
		os.Exit(1)
	}
	fmt.Printf("READY %s\n", c.ID)
	time.Sleep(5 * time.Minute) // until the parent kills it
	os.Exit(1)
}

// TestInterruptedTestsLeaveNothing interrupts a test process that holds a
// cluster, as Ctrl-C on `go test` does (SIGINT): its containers, networks
// and volumes are gone when it has exited. Then it kills one with SIGKILL,
// as `go test -timeout` or an OOM kill would, which runs no clean-up: the
// next Run, in another process, removes what it left.
func TestInterruptedTestsLeaveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters of containers: not under -short")
	}
	id, child := startHolder(t)
	if err := child.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	if left := leftovers(t, id); left != "" {
		t.Fatalf("after SIGINT, cluster %s left: %s", id, left)
	}

	id, child = startHolder(t)
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	if left := leftovers(t, id); left == "" {
		t.Fatalf("SIGKILL runs no clean-up, yet cluster %s left nothing: the check below would prove nothing", id)
	}
	c := run(t, testcluster.WithNodes(0))
	if left := leftovers(t, id); left != "" {
		t.Fatalf("Run (cluster %s) did not reap the SIGKILLed process's cluster %s: %s", c.ID, id, left)
	}
}

// startHolder runs this test binary as a cluster holder in a child process and returns
// its cluster's ID once the cluster is ready.
func startHolder(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1", "TESTCONTAINERS_RYUK_DISABLED=true", "TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	ready := make(chan string, 1)
	var lines []string
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- id
			}
			lines = append(lines, sc.Text())
		}
		close(ready)
	}()
	select {
	case id, ok := <-ready:
		if !ok {
			t.Fatalf("the child exited before its cluster was ready:\n%s", strings.Join(lines, "\n"))
		}
		return id, cmd
	case <-time.After(3 * time.Minute):
		t.Fatalf("the child's cluster was not ready in 3 minutes:\n%s", strings.Join(lines, "\n"))
	}
	return "", nil
}

// leftovers lists the Docker objects still labelled with cluster id.
func leftovers(t *testing.T, id string) string {
	t.Helper()
	var left []string
	for _, kind := range []string{"container", "network", "volume"} {
		args := []string{kind, "ls", "-q", "--filter", "label=io.kubesplit.testcluster=" + id}
		if kind == "container" {
			args = []string{"ps", "-aq", "--filter", "label=io.kubesplit.testcluster=" + id}
		}
		if out := docker(t, "", args...); out != "" {
			left = append(left, fmt.Sprintf("%ss %s", kind, strings.Join(strings.Fields(out), " ")))
		}
	}
	return strings.Join(left, "; ")
}
