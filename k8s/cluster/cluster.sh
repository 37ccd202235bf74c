#!/usr/bin/env bash
# Scaleshop's single-node Kubernetes on this machine: starts, checks and stops it, by pid.
#
#   k8s/cluster/cluster.sh up        start what is not running (idempotent: on a running cluster it only
#                                    says so); waits for a Ready node and cluster DNS; prints how to use it
#   k8s/cluster/cluster.sh down      stop every process by pid (pods: SIGTERM, then SIGKILL after 20 s),
#                                    unmount pod mounts, remove the bridges, veths, iptables rules and
#                                    ipsets it added; the workloads stay in etcd, so `up` brings them back
#   k8s/cluster/cluster.sh status    the processes (pid, RSS) and the node
#   k8s/cluster/cluster.sh load IMAGE [IMAGE...]   copy images from the Docker engine into the cluster
#                                    (starts dockerd with docker.sh when it is not running, stops it after)
#   k8s/cluster/cluster.sh import ARCHIVE.tar...    import image archives (docker save format) directly
#   k8s/cluster/cluster.sh env       print `export KUBECONFIG=...` for eval
#
# Parts (built by install.sh into .cache/cluster): one Kubernetes binary (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl), Debian's containerd as a
# second instance with CRI on its own socket, runc, the CNI bridge + host-local + portmap plugins,
# kube-proxy in iptables mode, kube-router's network policy controller (the NetworkPolicy enforcer:
# iptables + ipset, on the node like kube-proxy), CoreDNS, the local-path provisioner (StorageClass
# "standard", the default) and metrics-server. Everything listens on loopback or on the node bridge's address.
#
# Layout under .cache/cluster: pki/ (CA and certificates), config/ (kubeconfigs, component configs,
# CNI), state/ (etcd, containerd, kubelet, volumes: kept across down/up), run/ (pids, sockets,
# containerd's runtime state), logs/ (one log per process).
#
# Facts of this kind of machine it relies on (see README, "Kubernetes, verified here"): no
# CAP_SYS_RESOURCE, so containerd restricts oom_score_adj and kubelet/kube-proxy keep oomScoreAdj 0;
# cgroup v1 with containerd 1.6, so the kubelet runs the cgroupfs driver; no dummy netdev, so the node
# address sits on a bridge without ports; Docker may set FORWARD to DROP, so the pod bridge is allowed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
C="${SCALESHOP_CACHE:-$REPO/.cache}/cluster"
BIN=$C/bin IMAGES=$C/images PKI=$C/pki CFG=$C/config STATE=$C/state RUN=$C/run LOGS=$C/logs
# shellcheck source=k8s/cluster/versions.sh
source "$HERE/versions.sh"

CLUSTER_NAME=scaleshop-local                 # the kubeconfig's cluster and context name
NODE_NAME=$(hostname | tr '[:upper:]' '[:lower:]')
NODE_BRIDGE=ssk-node0 NODE_IP=10.240.0.1     # the node's address, on a bridge without ports
POD_BRIDGE=ssk-cni0 POD_CIDR=10.244.0.0/24 POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16 APISERVER_SERVICE_IP=10.96.0.1 DNS_SERVICE_IP=10.96.0.10
RULE_COMMENT=scaleshop-cluster               # marks the iptables rules this script adds itself
PROCESSES="containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router"
KUBECONFIG_ADMIN=$CFG/admin.kubeconfig
CTR=(ctr --address "$RUN/containerd.sock" --namespace k8s.io)

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ---- processes, by pid -------------------------------------------------------------------------
# pid_of NAME: the pid of our running NAME (a pid file left by a reboot may name someone else's process:
# ours have the cluster's folder in their command line)
pid_of() {
  local pid
  [[ -f $RUN/$1.pid ]] && pid=$(cat "$RUN/$1.pid") &&
    [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") == *"$C/"* ]] && echo "$pid"
}
start() {  # start NAME CMD...: detached, in its own session, log in logs/NAME.log
  local name=$1; shift
  pid_of "$name" >/dev/null && return 0
  log "starting $name"
  # without the caller's other open files: a daemon holding, say, the fd of a `flock` around
  # `make cluster-up` would hold that lock for as long as the cluster runs
  ( close_inherited_fds; exec setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null ) &
  echo $! >"$RUN/$name.pid"
}
close_inherited_fds() {  # close every fd above 2 of this (sub)shell
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    (( fd > 2 )) && eval "exec $fd>&-"
  done 2>/dev/null || true
}
stop() {  # stop NAME...: SIGTERM to each, up to 15 s for all of them to exit, then SIGKILL
  local name pid pids=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      log "stopping $name (pid $pid)"
      kill "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  for _ in $(seq 75); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && { log "pid $pid did not stop in 15 s: SIGKILL"; kill -9 "$pid" 2>/dev/null; }
  done
  for name in "$@"; do rm -f "$RUN/$name.pid"; done
  return 0
}
wait_until() {  # wait_until SECONDS WHAT CMD...: poll CMD every second
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "timed out after ${seconds}s waiting for $what (logs: $LOGS)"
}
# write_if_changed FILE: stdin to FILE only when it differs (kube-proxy exits when its config is rewritten)
write_if_changed() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; chmod 0644 "$1"; fi
}

# ---- certificates and kubeconfigs ------------------------------------------------------------------
certificate() {  # certificate NAME SUBJECT EXTENDED_USAGE [SUBJECT_ALT_NAMES]
  local name=$1 subject=$2 usage=$3 sans=${4:-}
  [[ -f $PKI/$name.crt ]] && return
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$PKI/$name.key" \
    -out "$PKI/$name.csr" -subj "$subject" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
kubeconfig() {  # kubeconfig NAME CERT: a kubeconfig for one client certificate
  write_if_changed "$CFG/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$PKI/ca.crt"}
users:
- name: $CLUSTER_NAME-$1
  user: {client-certificate: "$PKI/$2.crt", client-key: "$PKI/$2.key"}
contexts:
- name: $CLUSTER_NAME
  context: {cluster: $CLUSTER_NAME, user: $CLUSTER_NAME-$1}
current-context: $CLUSTER_NAME
EOF
}
make_pki() {
  mkdir -p "$PKI" "$CFG" && chmod 0700 "$PKI"
  if [[ ! -f $PKI/ca.crt ]]; then
    log "creating the cluster's certificate authority and certificates"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$PKI/ca.key" \
      -out "$PKI/ca.crt" -days 3650 -subj "/CN=$CLUSTER_NAME-ca" 2>/dev/null
  fi
  local apiserver_sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  apiserver_sans+=",DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$APISERVER_SERVICE_IP,IP:$NODE_IP"
  certificate apiserver /CN=kube-apiserver serverAuth "$apiserver_sans"
  certificate apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  certificate front-proxy-client /CN=front-proxy-client clientAuth   # the aggregator -> metrics-server
  certificate admin "/O=system:masters/CN=$CLUSTER_NAME-admin" clientAuth
  certificate controller-manager /CN=system:kube-controller-manager clientAuth
  certificate scheduler /CN=system:kube-scheduler clientAuth
  certificate kube-proxy /CN=system:kube-proxy clientAuth
  certificate kube-router /CN=system:kube-router clientAuth   # manifests/kube-router.yaml: its RBAC
  certificate kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  certificate kubelet-serving "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,DNS:localhost,IP:$NODE_IP,IP:127.0.0.1"
  if [[ ! -f $PKI/service-accounts.key ]]; then
    openssl genrsa -out "$PKI/service-accounts.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/service-accounts.key" -pubout -out "$PKI/service-accounts.pub" 2>/dev/null
  fi
  local component
  for component in admin controller-manager scheduler kube-proxy kube-router kubelet; do kubeconfig "$component" "$component"; done
}

# ---- component configuration -------------------------------------------------------------------------
write_configs() {
  mkdir -p "$CFG/cni" "$STATE/volumes" "$RUN" "$LOGS"
  write_if_changed "$CFG/containerd.toml" <<EOF
# The cluster's own containerd (Debian's 1.6), CRI on, beside any other containerd on the machine.
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  netns_mounts_under_state_dir = true
  # no CAP_SYS_RESOURCE on this kind of machine: nothing may lower oom_score_adj
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CFG/cni"
EOF
  write_if_changed "$CFG/cni/10-$CLUSTER_NAME.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CLUSTER_NAME",
  "plugins": [
    {"type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  write_if_changed "$CFG/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: "unix://$RUN/containerd.sock"
clusterDNS: ["$DNS_SERVICE_IP"]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podCIDR: "$POD_CIDR"
podLogsDir: "$STATE/pod-logs"
failSwapOn: false
oomScoreAdj: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"}
EOF
  write_if_changed "$CFG/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: "$NODE_NAME"
bindAddress: 127.0.0.1
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
clientConnection: {kubeconfig: "$CFG/kube-proxy.kubeconfig"}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: true}
# NodePorts answer on loopback and the node address only, never on the machine's own interfaces
nodePortAddresses: ["127.0.0.0/8", "$NODE_IP/32"]
oomScoreAdj: 0
EOF
}

# ---- host network ------------------------------------------------------------------------------------
SYSCTLS="net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet"
host_network_up() {
  local key
  modprobe br_netfilter 2>/dev/null || true
  for key in $SYSCTLS; do   # remember the machine's values once; down puts them back
    [[ -f $RUN/sysctl.$key ]] || sysctl -n "$key" >"$RUN/sysctl.$key"
  done
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
    ip addr add "$NODE_IP/32" dev "$NODE_BRIDGE"
  fi
  ip link set "$NODE_BRIDGE" up
  local direction
  for direction in -i -o; do   # Docker sets the FORWARD policy to DROP: let the pods' traffic through
    iptables -C FORWARD "$direction" "$POD_BRIDGE" -m comment --comment "$RULE_COMMENT" -j ACCEPT 2>/dev/null ||
      iptables -I FORWARD 1 "$direction" "$POD_BRIDGE" -m comment --comment "$RULE_COMMENT" -j ACCEPT
  done
}

# ---- images --------------------------------------------------------------------------------------------
import_archives() {  # import_archives ARCHIVE...: into the k8s.io namespace of the cluster's containerd
  local archive
  for archive in "$@"; do
    "${CTR[@]}" images import --all-platforms "$archive" >/dev/null || die "importing $archive failed"
  done
}
import_own_images() {
  local name ref have
  have=$("${CTR[@]}" images ls -q 2>/dev/null)
  for name in pause coredns local-path-provisioner metrics-server busybox; do
    [[ -f $IMAGES/$name.tar ]] || continue
    ref=$(tar -xOf "$IMAGES/$name.tar" manifest.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')
    # re-import when the archive is newer than the last import (a rebuilt image keeps its name)
    if grep -qxF "docker.io/$ref" <<<"$have" || grep -qxF "$ref" <<<"$have"; then
      [[ $IMAGES/$name.tar -nt $RUN/imported.$name ]] || continue
    fi
    log "importing image $ref"
    import_archives "$IMAGES/$name.tar"
    touch "$RUN/imported.$name"
  done
}
load_from_docker() {  # load_from_docker IMAGE...: docker save | ctr import (dockerd started if needed)
  pid_of containerd >/dev/null || die "the cluster is not up (make cluster-up)"
  local image
  for image in "$@"; do
    log "loading $image from the Docker engine into the cluster"
    # shellcheck disable=SC2016  # expanded by the inner bash
    "$HERE/docker.sh" run bash -c 'set -o pipefail; "$DOCKER" save "$1" | "${@:2}" images import --all-platforms -' _ "$image" "${CTR[@]}" >/dev/null \
      || die "could not load $image (is it built? /usr/bin/docker image ls)"
  done
}

# ---- add-on manifests ----------------------------------------------------------------------------------
apply_manifest() {  # apply_manifest FILE: fill in the @NAME@ placeholders, then kubectl apply
  sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" -e "s|@DNS_SERVICE_IP@|$DNS_SERVICE_IP|g" \
      -e "s|@LOCAL_PATH_PROVISIONER_IMAGE@|$LOCAL_PATH_PROVISIONER_IMAGE|g" \
      -e "s|@BUSYBOX_IMAGE@|$BUSYBOX_IMAGE|g" -e "s|@VOLUMES_DIR@|$STATE/volumes|g" \
      -e "s|@METRICS_SERVER_IMAGE@|$METRICS_SERVER_IMAGE|g" "$1" | kubectl apply -f - >/dev/null
}

# ---- up ------------------------------------------------------------------------------------------------
all_running() { local p; for p in $PROCESSES; do pid_of "$p" >/dev/null || return 1; done; }

print_usage_hint() {
  cat <<EOF
Cluster "$CLUSTER_NAME" is up: node $NODE_NAME (Kubernetes $KUBERNETES_VERSION), DNS at $DNS_SERVICE_IP.
  export KUBECONFIG=$KUBECONFIG_ADMIN      # context: $CLUSTER_NAME
  export PATH=$BIN:\$PATH                  # kubectl $KUBERNETES_VERSION
  kubectl get nodes,pods -A
NodePorts answer on 127.0.0.1. Load an image built with Docker: make cluster-load IMAGE=name:tag
Stop everything: make cluster-down
EOF
}

up() {
  [[ -x $BIN/kubernetes && -x $BIN/kube-router && -f $IMAGES/pause.tar && -f $IMAGES/coredns.tar ]] || die "not built yet: run k8s/cluster/install.sh"
  if all_running && kubectl get --raw /readyz >/dev/null 2>&1; then
    log "cluster already up: nothing to do"
    print_usage_hint
    return 0
  fi
  local started; started=$(date +%s)
  make_pki
  write_configs
  host_network_up

  start containerd containerd --config "$CFG/containerd.toml"
  wait_until 30 containerd "${CTR[@]}" version
  import_own_images

  start etcd "$BIN/etcd" --name "$NODE_NAME" --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 2147483648 --snapshot-count 10000
  wait_until 60 etcd curl -sf http://127.0.0.1:2381/health

  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port=6443 \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$PKI/service-accounts.pub" --service-account-signing-key-file="$PKI/service-accounts.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --requestheader-client-ca-file="$PKI/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true --profiling=false --endpoint-reconciler-type=lease
  wait_until 90 kube-apiserver kubectl get --raw /readyz

  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$CFG/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CFG/controller-manager.kubeconfig" --authorization-kubeconfig="$CFG/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/service-accounts.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --horizontal-pod-autoscaler-sync-period=15s
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$CFG/scheduler.kubeconfig" \
    --authentication-kubeconfig="$CFG/scheduler.kubeconfig" --authorization-kubeconfig="$CFG/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false

  start kubelet "$BIN/kubelet" --config="$CFG/kubelet.yaml" --kubeconfig="$CFG/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet-pki" --node-ip="$NODE_IP" --hostname-override="$NODE_NAME"
  wait_until 90 "node $NODE_NAME to register" kubectl get node "$NODE_NAME"

  start kube-proxy "$BIN/kube-proxy" --config="$CFG/kube-proxy.yaml"
  wait_until 60 kube-proxy curl -sf http://127.0.0.1:10256/healthz

  # The NetworkPolicy enforcer: only kube-router's firewall (no routing, no service proxy, no CNI), no
  # health or metrics listener (kube-router binds those on every interface); ready when its chains are
  # hooked into FORWARD.
  apply_manifest "$HERE/manifests/kube-router.yaml"
  start kube-router "$BIN/kube-router" --kubeconfig="$CFG/kube-router.kubeconfig" --hostname-override="$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --health-port=0 --metrics-port=0 --service-cluster-ip-range="$SERVICE_CIDR"
  wait_until 60 "kube-router's network policy chains" enforcer_hooked

  apply_manifest "$HERE/manifests/coredns.yaml"
  local addon
  for addon in local-path-provisioner metrics-server; do
    [[ -f $IMAGES/$addon.tar ]] && apply_manifest "$HERE/manifests/$addon.yaml"
  done
  kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null
  kubectl -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null
  wait_until 60 "cluster DNS to answer" dns_answers
  log "node Ready and DNS answering, $(( $(date +%s) - started ))s after start"
  for addon in local-path-provisioner metrics-server; do
    [[ -f $IMAGES/$addon.tar ]] && kubectl -n kube-system rollout status "deployment/$addon" --timeout=180s >/dev/null
  done
  print_usage_hint
}

enforcer_hooked() { iptables -S FORWARD | grep -q -- '-j KUBE-ROUTER-FORWARD'; }

# dns_answers: the DNS Service resolves the API server's Service name (asked from the host, over the
# Service IP, so kube-proxy's rules and the CoreDNS pod are both exercised)
dns_answers() {
  python3 - "$DNS_SERVICE_IP" <<'EOF'
import socket, struct, sys
query = struct.pack(">HHHHHH", 0x5353, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in "kubernetes.default.svc.cluster.local".split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(query, (sys.argv[1], 53))
answer = s.recv(512)
sys.exit(0 if struct.unpack(">H", answer[6:8])[0] >= 1 else 1)
EOF
}

# ---- down ----------------------------------------------------------------------------------------------
down() {
  set +e +o pipefail   # best effort from here on: tear down as much as there is
  # Like a node's shutdown: the workloads stay in the API (etcd is kept), so the next `up` starts
  # their pods again. The node's agents stop first (nothing restarts a pod), then the pods (their
  # watches would hold the API server's shutdown), then the control plane.
  stop kube-router kube-proxy kubelet
  if pid_of containerd >/dev/null; then   # the pods: SIGTERM, up to 20 s to exit, then SIGKILL
    local task container
    for task in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGTERM "$task" >/dev/null 2>&1; done
    for _ in $(seq 20); do
      [[ -z $("${CTR[@]}" tasks ls 2>/dev/null | awk 'NR>1 && $3=="RUNNING"') ]] && break
      sleep 1
    done
    for task in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1; done
    sleep 1
    for task in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$task" >/dev/null 2>&1; done
    for container in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$container" >/dev/null 2>&1; done
  fi
  stop kube-scheduler kube-controller-manager kube-apiserver
  stop etcd
  stop containerd
  # shims whose containerd is gone (a crash): they run with our state dir in their command line
  local shim
  for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" 2>/dev/null); do kill -9 "$shim" 2>/dev/null; done

  # mounts: pod volumes, network namespaces, shm and rootfs mounts under our folders, deepest first
  grep -E " ($STATE|$RUN)/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r mount; do umount -l "$mount" 2>/dev/null; done
  rm -rf "$RUN/containerd" "$RUN/runc"
  # interfaces: pod veths, the pod bridge and the node bridge
  local veth
  for veth in $(ip -o link show master "$POD_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$veth" 2>/dev/null; done
  ip link del "$POD_BRIDGE" 2>/dev/null
  ip link del "$NODE_BRIDGE" 2>/dev/null
  remove_iptables_rules
  remove_ipsets
  local key
  for key in $SYSCTLS; do
    [[ -f $RUN/sysctl.$key ]] && sysctl -qw "$key=$(cat "$RUN/sysctl.$key")" && rm -f "$RUN/sysctl.$key"
  done
  # what the CNI's DEL would have done for each pod: no pod is left, so no address is taken
  rm -f "$STATE"/cni-ipam/*/10.* "$STATE"/cni-ipam/*/last_reserved_ip.* 2>/dev/null
  remove_pod_cgroups
  log "down: no process, mount, interface, iptables rule or ipset of the cluster left (workloads and volumes kept in $STATE)"
}

# remove_iptables_rules: kube-proxy's, the kubelet's and kube-router's KUBE-* chains (KUBE-ROUTER-*,
# KUBE-POD-FW-*, KUBE-NWPLCY-*), the CNI's CNI-* chains and the
# FORWARD allowances added by host_network_up, in IPv4 and IPv6
remove_iptables_rules() {
  local tool table rule chain
  [[ -x $BIN/kube-proxy ]] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1
  for tool in iptables ip6tables; do
    for table in filter nat mangle; do
      "$tool" -t "$table" -S 2>/dev/null | grep -E -- "^-A .*(-j (KUBE-|CNI-)|--comment \"?$RULE_COMMENT)" |
        grep -vE '^-A (KUBE-|CNI-)' | sed 's/^-A/-D/' | while read -r rule; do eval "$tool" -t "$table" "$rule" 2>/dev/null; done
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
        "$tool" -t "$table" -F "$chain" 2>/dev/null
      done
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}'); do
        "$tool" -t "$table" -X "$chain" 2>/dev/null
      done
    done
  done
}

# remove_ipsets: kube-router's sets of pod addresses (KUBE-SRC-*, KUBE-DST-*), once no rule uses them
remove_ipsets() {
  local set
  command -v ipset >/dev/null || return 0
  for set in $(ipset list -n 2>/dev/null | grep -E '^KUBE-(SRC|DST)-'); do ipset destroy "$set" 2>/dev/null; done
  return 0
}

# remove_pod_cgroups: the kubelet's kubepods cgroups (empty once every pod is gone), in each hierarchy
remove_pod_cgroups() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $hierarchy ]] && find "$hierarchy" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}

status() {
  local name pid
  for name in $PROCESSES; do
    if pid=$(pid_of "$name"); then
      printf '%-24s pid %-7s RSS %s MiB\n' "$name" "$pid" "$(awk '/VmRSS/{printf "%d", $2/1024}' "/proc/$pid/status")"
    else
      printf '%-24s not running\n' "$name"
    fi
  done
  all_running && kubectl get nodes -o wide 2>/dev/null
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  load) shift; [[ $# -gt 0 ]] || die "usage: $0 load IMAGE..."; load_from_docker "$@" ;;
  import) shift; [[ $# -gt 0 ]] || die "usage: $0 import ARCHIVE.tar..."; pid_of containerd >/dev/null || die "the cluster is not up"; import_archives "$@" ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_ADMIN PATH=$BIN:\$PATH" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
