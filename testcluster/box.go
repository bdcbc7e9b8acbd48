package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Box is the name of the control-plane box of a WithControlPlaneBox cluster
// (its container, its node).
const Box = "box"

// boxImagesFile is where the role images land in the box: the node image's
// own images directory, which the box alone has (the shared images volume
// is mounted at roles.NodeImagesDir).
const boxImagesFile = "/usr/share/kubesplit/images/kubesplit-roles.tar"

func (c *Cluster) checkBoxOptions() error {
	for _, r := range Roles() {
		if _, ok := c.opts.images[r]; ok {
			return fmt.Errorf("WithControlPlaneBox: WithImage(%q) does not apply; a box runs kubesplit/ROLE:TAG (WithTag)", r)
		}
		if len(c.opts.roleArgs[r]) > 0 {
			return fmt.Errorf("WithControlPlaneBox: WithRoleArgs(%q) does not apply; the box's agent writes the roles' manifests", r)
		}
	}
	return nil
}

// startBox starts the box, waits for the files it writes into the data
// volume (admin kubeconfig, join token), then the nodes.
func (c *Cluster) startBox(ctx context.Context) error {
	if err := c.checkBoxOptions(); err != nil {
		return err
	}
	archive, err := c.saveImages(ctx, c.roleImages())
	if err != nil {
		return err
	}
	defer os.Remove(archive)
	if err := c.create(ctx, c.boxSpec(archive)); err != nil {
		return err
	}
	if err := c.readBoxFiles(ctx); err != nil {
		return err
	}
	errs := make([]error, c.opts.nodes)
	done := make(chan struct{})
	for i := 0; i < c.opts.nodes; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			errs[i] = c.create(ctx, c.nodeSpec(c.newNodeName()))
		}()
	}
	for i := 0; i < c.opts.nodes; i++ {
		<-done
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.waitReady(ctx)
}

func (c *Cluster) roleImages() []string {
	var images []string
	for _, r := range Roles() {
		images = append(images, c.opts.image(r))
	}
	return images
}

func (c *Cluster) boxSpec(archive string) spec {
	cgroup := "/" + c.name(Box)
	args := []string{"--control-plane", "--node-name", Box, "--node-ip", c.gatewayIP.String(),
		"--cgroup-root", cgroup, "--control-plane-image-tag", c.opts.tag}
	files := []testcontainers.ContainerFile{{HostFilePath: archive, ContainerFilePath: boxImagesFile, FileMode: 0o644}}
	for _, m := range c.opts.manifests {
		files = append(files, testcontainers.ContainerFile{Reader: bytes.NewReader(m.data),
			ContainerFilePath: dataDir + "/manifests/" + m.name, FileMode: 0o644})
	}
	return spec{name: Box, image: c.opts.image(Node), hostname: Box, node: true, cgroup: cgroup,
		cmd: append(args, c.opts.nodeArgs...),
		// the box's fixed address on edge, where the other nodes are; Docker
		// publishes the apiserver's port through control (edge is internal)
		networks: []string{c.edge, c.control}, ip: c.gatewayIP,
		publish: true,
		mounts: testcontainers.Mounts(testcontainers.VolumeMount(c.name("data"), dataDir),
			testcontainers.VolumeMount(c.name("images"), nodeImagesDir),
			testcontainers.VolumeMount(c.name("storage"), nodeStorageDir)),
		files: files,
	}
}

// readBoxFiles waits for the box's agent to initialise the data directory
// and reads the admin kubeconfig and the join token from it.
func (c *Cluster) readBoxFiles(ctx context.Context) error {
	m := c.member(Box)
	watch := c.watchCrash(ctx, Box)
	var kubeconfig, token []byte
	if err := poll(ctx, "the box's data directory", func(ctx context.Context) (bool, error) {
		if err := watch(ctx); err != nil {
			return false, err
		}
		var err error
		if kubeconfig, err = c.readFile(ctx, m.ctr, dataDir+"/admin.kubeconfig"); err != nil {
			return false, err
		}
		token, err = c.readFile(ctx, m.ctr, dataDir+"/config/node-token")
		return err == nil && len(kubeconfig) > 0 && len(bytes.TrimSpace(token)) > 0, err
	}); err != nil {
		return err
	}
	c.token = bytes.TrimSpace(token)
	return c.useKubeconfig(kubeconfig)
}

// MirrorPod is the name of a role's mirror pod in kube-system on a box.
func MirrorPod(role string) string { return role + "-" + Box }

// waitMirrorPods waits until every role's mirror pod is Ready.
func (c *Cluster) waitMirrorPods(ctx context.Context) error {
	watch := c.watchCrash(ctx, Box)
	for _, r := range Roles() {
		if err := poll(ctx, "mirror pod kube-system/"+MirrorPod(r)+" Ready", func(ctx context.Context) (bool, error) {
			if err := watch(ctx); err != nil {
				return false, err
			}
			p, err := c.client.CoreV1().Pods(metav1.NamespaceSystem).Get(ctx, MirrorPod(r), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return podReady(p), fmt.Errorf("phase %s", p.Status.Phase)
		}); err != nil {
			return err
		}
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// saveImages writes images into a temporary archive (docker save) and
// returns its path.
func (c *Cluster) saveImages(ctx context.Context, images []string) (string, error) {
	tmp, err := os.CreateTemp("", "testcluster-images-*.tar")
	if err != nil {
		return "", err
	}
	rc, err := c.docker.ImageSave(ctx, images)
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", fmt.Errorf("docker save %s: %w", strings.Join(images, " "), err)
	}
	_, err = io.Copy(tmp, rc)
	rc.Close()
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("docker save %s: %w", strings.Join(images, " "), err)
	}
	return tmp.Name(), nil
}

// Kill sends SIGKILL to a member's container, as a power cut does to a box
// (nothing is flushed or handed back), and returns once it has stopped;
// Start brings it back.
func (c *Cluster) Kill(ctx context.Context, name string) error {
	m := c.member(name)
	if m == nil {
		return fmt.Errorf("testcluster: Kill(%q): no such member", name)
	}
	c.opts.logf("testcluster %s: killing %s", c.ID, name)
	if _, err := c.docker.ContainerKill(ctx, m.ctr.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("testcluster: killing %s: %w", name, err)
	}
	return poll(ctx, name+" stopped", func(ctx context.Context) (bool, error) {
		st, err := m.ctr.State(ctx)
		if err != nil {
			return false, err
		}
		return !st.Running, errors.New("still running")
	})
}
