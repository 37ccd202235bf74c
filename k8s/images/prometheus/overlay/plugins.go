// The service discovery compiled into scaleshop/prometheus:dev: Kubernetes only (the chart's
// configuration, charts/scaleshop/files/prometheus.yml, uses nothing else). k8s/images/build.sh
// builds Prometheus with this file in place of its plugins/plugins.go (`go build -overlay`),
// which registers every cloud's discovery and most of the build's time; file and HTTP
// discovery are still registered by plugins/minimum.go.
package plugins

import (
	// Register the kubernetes plugin.
	_ "github.com/prometheus/prometheus/discovery/kubernetes"
)
