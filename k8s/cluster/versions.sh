# What the single-node cluster is made of: versions (read from the pinned go.mod files, so each
# is written once), the image names the cluster runs, and the Go packages of the add-ons.
# Sourced by k8s/cluster/install.sh and k8s/cluster/cluster.sh.
# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this file

_CLUSTER_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_go_mod_version() {  # DIR MODULE: the version go.mod requires (in a require block or on a require line)
  awk -v m="$2" '$1==m {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$_CLUSTER_SRC/$1/go.mod"
}

KUBERNETES_VERSION=$(_go_mod_version kubernetes k8s.io/kubernetes)   # e.g. v1.34.4
COREDNS_VERSION=$(_go_mod_version coredns github.com/coredns/coredns)
KUBERNETES_COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

# Add-ons built straight from their released modules (go.sum checked against the checksum database):
# module@version and the main package in it.
LOCAL_PATH_PROVISIONER_MODULE=github.com/rancher/local-path-provisioner@v0.0.30
METRICS_SERVER_MODULE=sigs.k8s.io/metrics-server@v0.8.0
# The NetworkPolicy enforcer: kube-router's network policy controller alone (iptables + ipset), run on
# the node like kube-proxy. The only version the Go module proxy serves (README, "Kubernetes, verified
# here", says why this one and not kube-network-policies, whose nftables `queue` this kernel lacks).
KUBE_ROUTER_MODULE=github.com/cloudnativelabs/kube-router/v2@v2.1.0
ADDONS="local-path-provisioner metrics-server kube-router"
addon_module() {
  case $1 in
    local-path-provisioner) echo "$LOCAL_PATH_PROVISIONER_MODULE" ;; metrics-server) echo "$METRICS_SERVER_MODULE" ;;
    kube-router) echo "$KUBE_ROUTER_MODULE" ;;
  esac
}
addon_package() { case $1 in local-path-provisioner) echo . ;; metrics-server) echo ./cmd/metrics-server ;; kube-router) echo ./cmd/kube-router ;; esac; }

# Images: built here, never pulled (no registry is reachable); the names say so.
PAUSE_IMAGE=scaleshop.local/pause:1
COREDNS_IMAGE=scaleshop.local/coredns:$COREDNS_VERSION
LOCAL_PATH_PROVISIONER_IMAGE=scaleshop.local/local-path-provisioner:${LOCAL_PATH_PROVISIONER_MODULE##*@}
METRICS_SERVER_IMAGE=scaleshop.local/metrics-server:${METRICS_SERVER_MODULE##*@}
# Debian's busybox-static: the local-path provisioner's helper pods (mkdir/rm of volume folders) and checks
BUSYBOX_IMAGE=scaleshop.local/busybox:1
