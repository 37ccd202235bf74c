// Command coredns is the cluster DNS of Scaleshop's single-node Kubernetes: CoreDNS at the
// version pinned in go.mod, linked with only the plugins the cluster's Corefile uses
// (k8s/cluster/manifests/coredns.yaml), so it builds in a minute and carries no cloud
// backends. The image made from it (FROM scratch) is the kube-dns Deployment's.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/core/dnsserver" // the server types the plugins register into
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() { coremain.Run() }
