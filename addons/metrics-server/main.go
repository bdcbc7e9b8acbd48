// Command metrics-server serves the cluster's resource metrics API
// (metrics.k8s.io: kubectl top, the HorizontalPodAutoscaler):
// sigs.k8s.io/metrics-server built from its Go module, with one kubesplit
// addition, --kubelet-via-apiserver (kubelet.go).
package main

import (
	"os"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/logs"
)

func main() {
	logs.InitLogs()
	err := newCommand(genericapiserver.SetupSignalHandler()).Execute()
	logs.FlushLogs()
	if err != nil {
		os.Exit(1)
	}
}
