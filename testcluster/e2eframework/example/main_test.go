// Package example is an e2e-framework suite on a kubesplit cluster: the
// same suite runs on kind by changing the provider passed to
// envfuncs.CreateCluster (and nothing else).
//
// It needs Docker and the kubesplit images (make images); run it with
//
//	TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 \
//	  GOWORK=off go test -count=1 -v ./example/
//
// Under -short it creates no cluster and runs nothing.
package example

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/kubesplit/kubesplit/testcluster"
	"github.com/kubesplit/kubesplit/testcluster/e2eframework"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"
)

var (
	testenv     env.Environment
	clusterName = envconf.RandomName("kubesplit-e2e", 20)
	namespace   = envconf.RandomName("testapp", 14)
	// testapp is built with the kubesplit images; nothing is pulled, so the
	// suite loads it onto the nodes first, as a kind suite would its own image
	testappImage = "kubesplit/testapp:" + cmp.Or(os.Getenv("KUBESPLIT_TAG"), testcluster.DefaultTag)
)

func TestMain(m *testing.M) {
	// TestMain runs before `go test` parses its flags (m.Run would), so
	// testing.Short() is only meaningful after flag.Parse. Under -short the
	// suite exits here, before a cluster is created: the unit tests of
	// this module run with -short in hack/test.sh's unit phase.
	flag.Parse()
	if testing.Short() {
		fmt.Println("example: -short: no kubesplit cluster, no e2e-framework suite")
		os.Exit(0)
	}
	testenv = env.New()
	testenv.Setup(
		// With kind this line reads: envfuncs.CreateCluster(kind.NewProvider(), clusterName),
		envfuncs.CreateCluster(e2eframework.NewProvider(), clusterName),
		envfuncs.LoadImageToCluster(clusterName, testappImage),
		envfuncs.CreateNamespace(namespace),
	)
	testenv.Finish(
		envfuncs.DeleteNamespace(namespace),
		envfuncs.DestroyCluster(clusterName),
	)
	os.Exit(testenv.Run(m))
}
