package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"

	"github.com/kubesplit/kubesplit/roles"
)

// The Docker-wired clusters (compose, testcluster, a box in a container) are
// driven through the docker CLI rather than the Engine API's Go client: the
// CLI is what users of these clusters already have, it honours their
// DOCKER_HOST and contexts, and the few calls needed here (ps, inspect,
// save, exec, cp, stop, start, run) are stable across Docker versions; kind
// makes the same choice.

// dockerCmd runs docker with args, stdin from in when not nil, and returns
// its standard output; its standard error becomes the error.
func dockerCmd(ctx context.Context, in io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdin = in
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", errors.New("the docker CLI is not on PATH (the Docker-wired clusters are driven through it)")
		}
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return out.String(), fmt.Errorf("docker %s: %s", args[0], msg)
	}
	return out.String(), nil
}

// member is one container of a Docker-wired cluster.
type member struct {
	ID, Name, Role, Image, User string
	Running                     bool
	// Cmd is the arguments after the image's entrypoint (the role's flags).
	Cmd []string
	// Ports is the published host address of each container port ("6443/tcp").
	Ports map[string]string
}

// flag is the value of --name in the member's arguments ("" when absent).
func (m member) flag(name string) string {
	for i, a := range m.Cmd {
		if a == "--"+name && i+1 < len(m.Cmd) {
			return m.Cmd[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// dockerCluster is the containers of one cluster, by role.
type dockerCluster struct {
	Name    string
	Members []member
}

// role returns the cluster's containers of one role.
func (c dockerCluster) role(name string) []member {
	var out []member
	for _, m := range c.Members {
		if m.Role == name {
			out = append(out, m)
		}
	}
	return out
}

// one returns the single container of a role, or says why there is not one.
func (c dockerCluster) one(role string) (member, error) {
	ms := c.role(role)
	switch len(ms) {
	case 0:
		return member{}, fmt.Errorf("cluster %s has no %s container", c.Name, role)
	case 1:
		return ms[0], nil
	}
	return member{}, fmt.Errorf("cluster %s has %d %s containers; this command drives clusters with one", c.Name, len(ms), role)
}

// inspected is the part of `docker inspect` read here.
type inspected struct {
	ID     string `json:"Id"`
	Name   string
	Config struct {
		Image  string
		User   string
		Cmd    []string
		Labels map[string]string
	}
	State struct {
		Running bool
	}
	NetworkSettings struct {
		Ports map[string][]struct {
			HostIP   string `json:"HostIp"`
			HostPort string
		}
	}
}

// composeProject is the label compose puts on a project's containers.
const composeProject = "com.docker.compose.project"

// dockerClusters lists the Docker-wired kubesplit clusters on this Docker
// host, by name: compose's project name, or testcluster's cluster ID.
func dockerClusters(ctx context.Context) (map[string]*dockerCluster, error) {
	ids, err := dockerCmd(ctx, nil, "ps", "--all", "--quiet", "--no-trunc", "--filter", "label="+roles.LabelRole)
	if err != nil {
		return nil, err
	}
	out := map[string]*dockerCluster{}
	if strings.TrimSpace(ids) == "" {
		return out, nil
	}
	raw, err := dockerCmd(ctx, nil, append([]string{"inspect"}, strings.Fields(ids)...)...)
	if err != nil {
		return nil, err
	}
	return parseClusters([]byte(raw))
}

// parseClusters groups `docker inspect` output into clusters.
func parseClusters(raw []byte) (map[string]*dockerCluster, error) {
	var list []inspected
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("reading docker inspect: %w", err)
	}
	out := map[string]*dockerCluster{}
	for _, c := range list {
		name := c.Config.Labels[roles.LabelCluster]
		if name == "" {
			name = c.Config.Labels[composeProject]
		}
		role := c.Config.Labels[roles.LabelRole]
		if name == "" || role == "" {
			continue
		}
		m := member{ID: c.ID, Name: strings.TrimPrefix(c.Name, "/"), Role: role, Image: c.Config.Image,
			User: c.Config.User, Running: c.State.Running, Cmd: c.Config.Cmd, Ports: map[string]string{}}
		for port, binds := range c.NetworkSettings.Ports {
			if len(binds) > 0 {
				ip := binds[0].HostIP
				if ip == "" || ip == "0.0.0.0" || ip == "::" {
					ip = "127.0.0.1"
				}
				m.Ports[port] = ip + ":" + binds[0].HostPort
			}
		}
		if out[name] == nil {
			out[name] = &dockerCluster{Name: name}
		}
		out[name].Members = append(out[name].Members, m)
	}
	for _, c := range out {
		sort.Slice(c.Members, func(i, j int) bool { return c.Members[i].Name < c.Members[j].Name })
	}
	return out, nil
}

// pickCluster returns the cluster named, or the only one there is.
func pickCluster(all map[string]*dockerCluster, name string) (*dockerCluster, error) {
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	slices.Sort(names)
	if name != "" {
		if c, ok := all[name]; ok {
			return c, nil
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("no cluster named %s: this Docker host runs no kubesplit cluster (make up starts one)", name)
		}
		return nil, fmt.Errorf("no cluster named %s; this Docker host has %s", name, strings.Join(names, ", "))
	}
	switch len(names) {
	case 0:
		return nil, errors.New("this Docker host runs no kubesplit cluster (make up starts one); pass --cluster to name one")
	case 1:
		return all[names[0]], nil
	}
	return nil, fmt.Errorf("this Docker host has several kubesplit clusters (%s): pick one with --cluster", strings.Join(names, ", "))
}

// findCluster is dockerClusters then pickCluster.
func findCluster(ctx context.Context, name string) (*dockerCluster, error) {
	all, err := dockerClusters(ctx)
	if err != nil {
		return nil, err
	}
	return pickCluster(all, name)
}
