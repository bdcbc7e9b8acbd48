package testcluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// Labels on every container, network and volume of a cluster.
const (
	labelCluster = "io.kubesplit.testcluster"
	// labelOwner is HOST/PID/START: the process that made the cluster, with
	// its start time (so a reused PID is not taken for the owner)
	labelOwner  = "io.kubesplit.testcluster.owner"
	labelMember = "io.kubesplit.testcluster.member"
)

var ownerOnce = sync.OnceValue(func() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid()) + "/" + processStart(os.Getpid())
})

func (c *Cluster) labels() map[string]string {
	return map[string]string{labelCluster: c.ID, labelOwner: ownerOnce()}
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// processStart is a process's start time in clock ticks since boot (field 22
// of /proc/PID/stat), or "" if there is no such process.
func processStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// the command name (field 2) may hold spaces; fields after it are plain
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// ownerGone says whether an owner label names a process of this host that
// no longer runs. Other hosts' clusters (a shared Docker engine) are never
// judged.
func ownerGone(owner string) bool {
	parts := strings.Split(owner, "/")
	if len(parts) != 3 {
		return false
	}
	host, _ := os.Hostname()
	if parts[0] != host {
		return false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil {
		return false
	}
	return processStart(pid) != parts[2]
}

// reapStale removes what clusters of dead processes of this host left: a
// `go test` killed by its -timeout or by SIGKILL runs no clean-up.
func reapStale(ctx context.Context, docker *testcontainers.DockerClient, logf func(string, ...any)) {
	f := make(client.Filters).Add("label", labelCluster)
	stale := map[string]bool{}
	cs, err := docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return
	}
	for _, ct := range cs.Items {
		if ownerGone(ct.Labels[labelOwner]) {
			stale[ct.Labels[labelCluster]] = true
			_, _ = docker.ContainerRemove(ctx, ct.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	}
	if ns, err := docker.NetworkList(ctx, client.NetworkListOptions{Filters: f}); err == nil {
		for _, n := range ns.Items {
			if ownerGone(n.Labels[labelOwner]) {
				stale[n.Labels[labelCluster]] = true
				_, _ = docker.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{})
			}
		}
	}
	if vs, err := docker.VolumeList(ctx, client.VolumeListOptions{Filters: f}); err == nil {
		for _, v := range vs.Items {
			if ownerGone(v.Labels[labelOwner]) {
				stale[v.Labels[labelCluster]] = true
				_, _ = docker.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true})
			}
		}
	}
	for id := range stale {
		removeCgroups("kubesplit-" + id + "-")
		logf("testcluster: removed the leftovers of cluster %s (its process is gone)", id)
	}
}

// removeCgroups removes the (empty) cgroups whose top-level name starts
// with prefix, in every hierarchy: the nodes' kubelets make them in the
// host's cgroup tree, and they outlive the containers. Best effort: it
// needs the rights of the Docker host's root.
func removeCgroups(prefix string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/" + prefix + "*")
	more, _ := filepath.Glob("/sys/fs/cgroup/*/" + prefix + "*")
	for _, d := range append(dirs, more...) {
		removeTree(d)
	}
}

func removeTree(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir)
}

// live clusters of this process, for the signal handler
var (
	liveMu sync.Mutex
	live   = map[*Cluster]bool{}
)

func register(c *Cluster) {
	liveMu.Lock()
	defer liveMu.Unlock()
	live[c] = true
}

func unregister(c *Cluster) {
	liveMu.Lock()
	defer liveMu.Unlock()
	delete(live, c)
}

var signalOnce sync.Once

// installSignalHandler terminates every live cluster on SIGINT or SIGTERM
// and then dies of the same signal, so Ctrl-C on `go test` leaves nothing.
func installSignalHandler() {
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-ch
			liveMu.Lock()
			cs := make([]*Cluster, 0, len(live))
			for c := range live {
				cs = append(cs, c)
			}
			liveMu.Unlock()
			fmt.Fprintf(os.Stderr, "testcluster: %v: terminating %d cluster(s)\n", sig, len(cs))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			var wg sync.WaitGroup
			for _, c := range cs {
				wg.Add(1)
				go func() { defer wg.Done(); _ = c.Terminate(ctx) }()
			}
			wg.Wait()
			cancel()
			signal.Reset(sig)
			_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
			time.Sleep(time.Second)
			os.Exit(130)
		}()
	})
}

// checkReaper refuses what would make testcontainers reach for a registry:
// unless disabled, its reaper (Ryuk) starts with the first container, and
// its image is pulled if it is not local.
func checkReaper(ctx context.Context, docker *testcontainers.DockerClient) error {
	if testcontainers.ReadConfig().RyukDisabled {
		return nil
	}
	if _, err := docker.ImageInspect(ctx, testcontainers.ReaperDefaultImage); err == nil {
		return nil
	}
	return fmt.Errorf("testcluster: testcontainers' reaper is enabled but its image %s is not local, and Run never pulls: "+
		"set TESTCONTAINERS_RYUK_DISABLED=true (this package removes its containers itself) or load that image", testcontainers.ReaperDefaultImage)
}

// checkImages makes sure every image the cluster needs is local, with an
// error that says how to get it: Run never pulls.
func checkImages(ctx context.Context, docker *testcontainers.DockerClient, o *options) error {
	names := append(Roles(), CLI, Node, "coredns")
	if o.nodes == 0 {
		names = append(Roles(), CLI)
	}
	if o.backend == BackendPostgres {
		names = append(names, Postgres)
	}
	var errs []error
	for _, n := range names {
		if err := checkImage(ctx, docker, o.image(n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func checkImage(ctx context.Context, docker *testcontainers.DockerClient, ref string) error {
	if _, err := docker.ImageInspect(ctx, ref); err != nil {
		return fmt.Errorf("testcluster: image %s is not in the local Docker engine (%v): build the kubesplit images with `make images` "+
			"in the kubesplit repository or `docker load -i` its image archive; Run never pulls", ref, err)
	}
	return nil
}
