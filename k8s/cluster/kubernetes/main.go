// Command kubernetes is Scaleshop's single-node Kubernetes in one binary.
//
// It links etcd and the Kubernetes components of the version pinned in go.mod
// (k8s.io/kubernetes with every k8s.io staging module replaced by its tag) into one
// executable, so one Go build gives the whole control plane and node. The component is
// chosen by the name it is started under (a symlink: etcd, kube-apiserver, ..., kubectl)
// or, when started as "kubernetes", by the first argument.
//
// Built by k8s/cluster/install.sh into .cache/cluster/bin; started by k8s/cluster/cluster.sh.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	_ "time/tzdata" // the scheduler and the CronJob controller need zone data; the image-less host may lack it

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream's binaries
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream's binaries
	_ "k8s.io/component-base/metrics/prometheus/version"  // the build-info metric

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"

	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

// components maps a component's name to the function that runs it with os.Args and
// returns its exit code (etcd exits by itself).
var components = map[string]func() int{
	"etcd": func() int { etcdmain.Main(os.Args); return 0 },
	"kube-apiserver": func() int {
		return cli.Run(apiserver.NewAPIServerCommand())
	},
	"kube-controller-manager": func() int {
		return cli.Run(controllermanager.NewControllerManagerCommand())
	},
	"kube-scheduler": func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kubelet": func() int {
		return cli.Run(kubelet.NewKubeletCommand(context.Background()))
	},
	"kube-proxy": func() int { return cli.Run(proxy.NewProxyCommand()) },
	"kubectl": func() int {
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck // as upstream's kubectl
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err) // prints the error the way kubectl does and exits non-zero
		}
		return 0
	},
}

func usage() {
	names := make([]string, 0, len(components))
	for name := range components {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: kubernetes {%s} [flags]\n", strings.Join(names, "|"))
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, known := components[name]; !known {
		if len(os.Args) < 2 {
			usage()
			os.Exit(2)
		}
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	run, known := components[name]
	if !known {
		fmt.Fprintf(os.Stderr, "kubernetes: unknown component %q\n", name)
		usage()
		os.Exit(2)
	}
	os.Exit(run())
}
