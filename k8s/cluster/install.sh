#!/usr/bin/env bash
# Installs everything Scaleshop's single-node Kubernetes (`make cluster-up`) runs, idempotently,
# into the git-ignored cache folder (default <repo>/.cache/cluster):
#
#   Debian packages   containerd (1.6, run as a second instance with CRI on), runc, the CNI plugins
#                     (bridge, host-local, portmap), iptables, ipset (kube-router), conntrack, gcc (for the pause program),
#                     openssl (the certificates), curl (health checks)
#   bin/kubernetes    one multi-call binary built from k8s/cluster/kubernetes (Kubernetes 1.34 +
#                     etcd); bin/etcd, bin/kube-apiserver, ..., bin/kubectl are symlinks to it
#   bin/coredns       CoreDNS built from k8s/cluster/coredns (trimmed plugin set)
#   bin/pause         the static pod-sandbox program from k8s/cluster/pause/pause.c
#   bin/local-path-provisioner, bin/metrics-server, bin/kube-router (the NetworkPolicy enforcer)
#                     from their Go modules (versions.sh)
#   images/*.tar      image archives FROM scratch (k8s/cluster/image_archive.py), imported into the
#                     cluster's containerd by cluster.sh: no Docker engine and no registry needed
#
# Each part records a stamp of its inputs (the files it is built from, its flags, Go's version);
# a run that finds every stamp current does nothing and takes seconds. Long builds report their
# progress (packages compiled of the total) every 20 s. A first build on a fresh machine takes
# 15-25 min on 2 cores (Kubernetes 8-15 min of it); with Go's build cache warm it is link steps.
#
# Usage: k8s/cluster/install.sh [packages|kubernetes|coredns|pause|addons|images]...
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CLUSTER_CACHE="${SCALESHOP_CACHE:-$REPO/.cache}/cluster"
BIN="$CLUSTER_CACHE/bin" IMAGES="$CLUSTER_CACHE/images" STAMPS="$CLUSTER_CACHE/stamps"
LOGS="$CLUSTER_CACHE/logs"
mkdir -p "$BIN" "$IMAGES" "$STAMPS" "$LOGS"
# shellcheck source=k8s/cluster/versions.sh
source "$HERE/versions.sh"

log() { printf '[cluster-install] %s\n' "$*" >&2; }
die() { printf '[cluster-install] error: %s\n' "$*" >&2; exit 1; }

# stamp_ok NAME INPUT...: true when the hash of the inputs (files, or literal strings) equals the recorded one.
inputs_hash() {
  local item
  for item in "$@"; do if [[ -f $item ]]; then cat "$item"; else printf '%s\n' "$item"; fi; done | sha256sum | cut -d' ' -f1
}
stamp_ok() { local name=$1; shift; [[ -f "$STAMPS/$name" && "$(cat "$STAMPS/$name")" == "$(inputs_hash "$@")" ]]; }
stamp_write() { local name=$1; shift; inputs_hash "$@" >"$STAMPS/$name"; }

# ---- Debian packages ---------------------------------------------------------------------------
DEBIAN_PACKAGES=(containerd runc containernetworking-plugins iptables ipset conntrack gcc libc6-dev openssl curl)
install_packages() {
  local missing=() pkg
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [[ ${#missing[@]} == 0 ]] && return
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOGS/apt.log" 2>&1 || {
    apt-get update -qq >>"$LOGS/apt.log" 2>&1
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOGS/apt.log" 2>&1 || die "apt-get failed (see $LOGS/apt.log)"
  }
}

# ---- Go builds with progress ---------------------------------------------------------------------
# go_build NAME MODULE_DIR OUT ESTIMATE LDFLAGS [PACKAGE [MODFLAG]]: build with -v in the background and report,
# every 20 s, how many of the module's packages are compiled (cached packages are not listed, so a
# warm build finishes before the count gets far).
go_build() {
  local name=$1 dir=$2 out=$3 estimate=$4 ldflags=$5 pkg=${6:-.} modflag=${7:--mod=readonly}
  command -v go >/dev/null || die "Go (1.24 or newer) is needed to build $name"
  local total started pid compiled rc=0 buildlog="$LOGS/build-$name.log"
  log "$name: downloading modules"
  (cd "$dir" && go mod download) >"$buildlog" 2>&1 || die "$name: go mod download failed (see $buildlog)"
  total=$(cd "$dir" && CGO_ENABLED=0 go list "$modflag" -deps "$pkg" | wc -l)
  log "$name: building $total packages ($estimate; a warm Go build cache makes it ~1 min)"
  started=$(date +%s)
  (cd "$dir" && CGO_ENABLED=0 exec go build "$modflag" -v -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg") >>"$buildlog" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null || break
    compiled=$(grep -cv '^go: ' "$buildlog" || true)
    log "$name: $compiled/$total packages compiled, $(( $(date +%s) - started ))s elapsed"
  done
  wait "$pid" || rc=$?
  [[ $rc == 0 ]] || die "$name: go build failed (see $buildlog)"
  mv -f "$out.tmp" "$out"
  log "$name: built in $(( $(date +%s) - started ))s ($(du -h "$out" | cut -f1))"
}

# version ldflags for the Kubernetes binary: what `kubectl version` and the node report
kubernetes_ldflags() {
  local flags="-s -w" pkg minor
  minor=$(cut -d. -f2 <<<"${KUBERNETES_VERSION#v}")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$flags"
}

install_kubernetes() {
  local dir="$HERE/kubernetes" ldflags component
  ldflags=$(kubernetes_ldflags)
  local inputs=("$dir/go.mod" "$dir/go.sum" "$dir/main.go" "$ldflags" "$(go env GOVERSION)")
  if ! { [[ -x $BIN/kubernetes ]] && stamp_ok kubernetes "${inputs[@]}"; }; then
    go_build kubernetes "$dir" "$BIN/kubernetes" "cold: ~8-15 min on 2 cores" "$ldflags"
    stamp_write kubernetes "${inputs[@]}"
  fi
  for component in $KUBERNETES_COMPONENTS; do ln -sfn kubernetes "$BIN/$component"; done
}

install_coredns() {
  local dir="$HERE/coredns"
  local inputs=("$dir/go.mod" "$dir/go.sum" "$dir/main.go" "$(go env GOVERSION)")
  [[ -x $BIN/coredns ]] && stamp_ok coredns "${inputs[@]}" && return
  go_build coredns "$dir" "$BIN/coredns" "cold: ~1.5-3 min" "-s -w"
  stamp_write coredns "${inputs[@]}"
}

install_pause() {
  local src="$HERE/pause/pause.c"
  [[ -x $BIN/pause ]] && stamp_ok pause "$src" && return
  log "pause: compiling (static)"
  gcc -Os -static -Wall -Werror -o "$BIN/pause.tmp" "$src" && strip "$BIN/pause.tmp" && mv -f "$BIN/pause.tmp" "$BIN/pause"
  stamp_write pause "$src"
}

# Add-ons: the storage provisioner (volume claims bind), metrics-server (the HPA's metrics) and
# kube-router (NetworkPolicies), built in their released module (its own go.mod and go.sum) at the
# version pinned in versions.sh.
install_addons() {
  local name module dir
  for name in $ADDONS; do
    module=$(addon_module "$name")
    local ldflags="-s -w"   # kube-router reports its version from a variable set at build time
    [[ $name == kube-router ]] && ldflags+=" -X ${module%@*}/pkg/version.Version=${module##*@}"
    local inputs=("$module" "$(go env GOVERSION)")
    [[ $ldflags == "-s -w" ]] || inputs+=("$ldflags")
    [[ -x $BIN/$name ]] && stamp_ok "$name" "${inputs[@]}" && continue
    dir=$(go mod download -json "$module" | awk -F'"' '$2=="Dir"{print $4}')
    [[ -n $dir ]] || die "$name: go mod download $module failed"
    # -mod=mod: a module's zip leaves out its vendor folder but keeps vendor/modules.txt
    go_build "$name" "$dir" "$BIN/$name" "cold: ~2-4 min" "$ldflags" "$(addon_package "$name")" -mod=mod
    stamp_write "$name" "${inputs[@]}"
  done
}

# Debian's busybox-static: the local-path provisioner's helper pods run `sh -c 'mkdir ...; rm ...'`
install_busybox() {
  [[ -x $BIN/busybox ]] && stamp_ok busybox "busybox-static" && return
  local tmp; tmp=$(mktemp -d)
  log "busybox: fetching Debian's busybox-static"
  (cd "$tmp" && apt-get download -qq busybox-static >/dev/null 2>&1) \
    || { apt-get update -qq >/dev/null; (cd "$tmp" && apt-get download -qq busybox-static >/dev/null); } \
    || die "apt-get download busybox-static failed"
  dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/root"
  install -m 0755 "$tmp/root/bin/busybox" "$BIN/busybox"
  rm -rf "$tmp"
  stamp_write busybox "busybox-static"
}

# ---- images (archives FROM scratch; cluster.sh imports them into the cluster's containerd) --------
image() {  # image NAME REF ARCHIVE_ARGS...: (re)write images/NAME.tar when its binary or REF changed
  local name=$1 ref=$2; shift 2
  local inputs=("$BIN/$name" "$HERE/image_archive.py" "$ref" "$*")
  [[ -f $IMAGES/$name.tar ]] && stamp_ok "image-$name" "${inputs[@]}" && return
  log "image $ref"
  python3 "$HERE/image_archive.py" "$IMAGES/$name.tar" "$ref" "$@" >/dev/null
  stamp_write "image-$name" "${inputs[@]}"
}
install_images() {
  image pause "$PAUSE_IMAGE" --file "$BIN/pause:/pause" --entrypoint /pause --user 65535:65535
  image coredns "$COREDNS_IMAGE" --file "$BIN/coredns:/coredns" --entrypoint /coredns --expose 53/udp --expose 53/tcp
  [[ -x $BIN/local-path-provisioner ]] && image local-path-provisioner "$LOCAL_PATH_PROVISIONER_IMAGE" \
    --file "$BIN/local-path-provisioner:/local-path-provisioner" --entrypoint /local-path-provisioner
  [[ -x $BIN/metrics-server ]] && image metrics-server "$METRICS_SERVER_IMAGE" \
    --file "$BIN/metrics-server:/metrics-server" --entrypoint /metrics-server --user 65534:65534
  if [[ -x $BIN/busybox ]]; then
    local applet links=()
    for applet in sh mkdir rm chmod ls cat echo sleep nslookup wget httpd nc; do links+=(--link "/bin/$applet:busybox"); done
    image busybox "$BUSYBOX_IMAGE" --file "$BIN/busybox:/bin/busybox" "${links[@]}" --entrypoint /bin/sh
  fi
  return 0
}

parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(packages kubernetes coredns pause addons images)
started=$(date +%s)
if [[ ! -x $BIN/kubernetes && " ${parts[*]} " == *" kubernetes "* ]]; then
  log "first build: about 15-25 minutes on 2 cores (Kubernetes, CoreDNS, the add-ons from the Go module proxy;"
  log "Go's build cache keeps the result, so the next build on this machine is a few link steps)"
fi
for part in "${parts[@]}"; do
  case "$part" in
    packages) install_packages ;;
    kubernetes) install_kubernetes ;;
    coredns) install_coredns ;;
    pause) install_pause ;;
    addons) install_addons; install_busybox ;;
    images) install_images ;;
    *) die "unknown part '$part' (packages|kubernetes|coredns|pause|addons|images)" ;;
  esac
done
log "done in $(( $(date +%s) - started ))s: $BIN, $IMAGES"
