#!/usr/bin/env bash
# Builds every image the chart runs on this machine's cluster, here, from Debian's packages
# and the project's own files; no container registry is needed (`make images`).
#
#   scaleshop/debian:bookworm        Debian 12 minbase made with debootstrap, `docker import`ed
#   scaleshop/python:3.11-bookworm   + Debian's python3, python3-venv        (k8s/images/python)
#   scaleshop/jre:17-bookworm        + Debian's openjdk-17-jre-headless      (k8s/images/jre)
#   scaleshop:dev                    the services: the project's Dockerfile on the Python base
#   scaleshop/gateway:dev            Debian's nginx                          (k8s/images/gateway)
#   scaleshop/memcached:dev          Debian's memcached                      (k8s/images/memcached)
#   scaleshop/kafka:dev              the Kafka jars (Maven) on the JRE       (k8s/images/kafka)
#   scaleshop/mongo-java-server:dev  the local stack's database on the JRE   (k8s/images/mongo-java-server)
#   scaleshop/curl:dev               Debian's curl, for `helm test`          (k8s/images/curl)
#   scaleshop/prometheus:dev         Prometheus built from Go modules (k8s/images/prometheus: Debian's
#                                    package has no Kubernetes discovery), with that discovery only
#
# Everything a build needs is prepared on the host and put in its context: Debian packages
# fetched with the host's apt (its sources, read at run time; no mirror address is written
# anywhere), Python wheels (`pip wheel`), jars (Maven, stack/install.sh). So every
# `docker build` runs with `--network none`, and nothing of this machine ends up in an image.
#
# Idempotent: each image carries the hash of its inputs (label dev.scaleshop.inputs: its
# context, its base image's id, its build arguments); an image whose hash is current is
# skipped. Usage: k8s/images/build.sh [IMAGE...]  (names: debian python jre services gateway
# memcached kafka mongo-java-server curl prometheus; default all). Needs a running dockerd
# (k8s/cluster/docker.sh; `make images` starts it for the build). `build.sh wheelhouse` only
# prepares the services' wheelhouse (`make wheelhouse`, before a plain `docker build .`);
# `build.sh list` prints the images the chart runs (not the bases), one per line.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/k8s/images"
CACHE="${SCALESHOP_CACHE:-$REPO/.cache}"
WORK="$CACHE/images"
DOCKER="${DOCKER:-/usr/bin/docker}"   # Debian's client (/usr/local/bin/docker may be another one)
LABEL=dev.scaleshop.inputs
SUITE=bookworm
IMAGE_REPO="${IMAGE_REPO:-scaleshop}"
IMAGE_TAG="${IMAGE_TAG:-dev}"

declare -A IMAGE=(
  [debian]="scaleshop/debian:$SUITE"
  [python]="scaleshop/python:3.11-$SUITE"
  [jre]="scaleshop/jre:17-$SUITE"
  [services]="$IMAGE_REPO:$IMAGE_TAG"
  [gateway]="scaleshop/gateway:dev"
  [memcached]="scaleshop/memcached:dev"
  [kafka]="scaleshop/kafka:dev"
  [mongo-java-server]="scaleshop/mongo-java-server:dev"
  [curl]="scaleshop/curl:dev"
  [prometheus]="scaleshop/prometheus:dev"
)
ORDER=(debian python jre services gateway memcached kafka mongo-java-server curl prometheus)
# Debian packages each image adds to its base (dependencies are resolved against the base).
declare -A PACKAGES=(
  [python]="python3 python3-venv"
  [jre]="openjdk-17-jre-headless"
  [gateway]="nginx"
  [memcached]="memcached"
  [curl]="curl"
)
declare -A BASE=([python]=debian [jre]=debian [gateway]=debian [memcached]=debian [curl]=debian [prometheus]=debian
                 [services]=python [kafka]=jre [mongo-java-server]=jre)

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }


image_id() { "$DOCKER" image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
image_inputs() { "$DOCKER" image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }

# tree_hash DIR...: one hash of the files' paths and contents (order-independent of the walk).
tree_hash() {
  local dir
  for dir in "$@"; do
    (cd "$dir" && find . \( -name __pycache__ -o -name '*.pyc' -o -name .pytest_cache \) -prune -o -type f -print0 \
      | LC_ALL=C sort -z | xargs -0 -r sha256sum)
  done | sha256sum | cut -d' ' -f1
}

# ---- inputs prepared on the host ------------------------------------------------------------

# The URL of the host's apt source for $SUITE (its main archive), read now, never stored.
host_mirror() {
  # shellcheck disable=SC2016  # $(...) are apt's format fields, not the shell's
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' 2>/dev/null \
    | awk -v s="$SUITE" '$2 == s && $3 == "Packages" {print $1; exit}'
}

# apt on the host, answering for a root filesystem described by its dpkg status file.
apt_for() {
  local status=$1; shift
  apt-get -q -o Debug::NoLocking=1 -o Dir::State::status="$status" \
    -o APT::Install-Recommends=false -o APT::Install-Suggests=false "$@"
}

# fetch_debs STATUS DEST PACKAGE...: the .deb files that installing PACKAGE... on a root
# filesystem with that dpkg status needs (the packages and their missing dependencies),
# downloaded once into a cache and linked into DEST.
fetch_debs() {
  local status=$1 dest=$2; shift 2
  local archive="$WORK/debs-cache" listing
  mkdir -p "$archive/partial"
  rm -rf "$dest"; mkdir -p "$dest"
  apt_for "$status" -o Dir::Cache::archives="$archive" install -y -qq --download-only "$@" >/dev/null \
    || { apt-get update -qq >/dev/null && apt_for "$status" -o Dir::Cache::archives="$archive" install -y -qq --download-only "$@" >/dev/null; } \
    || die "apt could not fetch $* (and their dependencies)"
  # Which files this set needs: --print-uris against an empty archive lists all of them.
  listing=$(mktemp -d)
  mkdir -p "$listing/partial"
  apt_for "$status" -o Dir::Cache::archives="$listing" install -y -qq --print-uris "$@" \
    | awk '{print $2}' | while read -r file; do ln "$archive/$file" "$dest/$file"; done
  rm -rf "$listing"
  compgen -G "$dest/*.deb" >/dev/null || die "no packages to add for $* (already in the base?)"
}

# The Python packages as wheels, built on the host (the build installs them with --no-index).
WHEELHOUSE="$CACHE/wheelhouse"   # in the services' build context: see .dockerignore, Dockerfile
prepare_wheelhouse() {
  local stamp="$WHEELHOUSE/.requirements.sha256" want
  want=$(sha256sum "$REPO/requirements.txt" | cut -d' ' -f1)
  [[ -f $stamp && "$(cat "$stamp")" == "$want" ]] && return
  log "services: building the wheelhouse from requirements.txt (pip wheel on the host)"
  rm -rf "$WHEELHOUSE"; mkdir -p "$WHEELHOUSE"
  "$CACHE/venv/bin/python" -m pip wheel --quiet -r "$REPO/requirements.txt" -w "$WHEELHOUSE" \
    || die "pip wheel -r requirements.txt failed"
  echo "$want" >"$stamp"
}

# ---- building ---------------------------------------------------------------------------------

# docker_build NAME CONTEXT DOCKERFILE HASH [BUILD-ARG...]: build with no network, labelled
# with HASH; the build's steps are shown as they start, its full output is in $WORK/logs.
docker_build() {
  local name=$1 context=$2 dockerfile=$3 hash=$4; shift 4
  local args=() arg logfile="$WORK/logs/$name.log" start
  for arg in "$@"; do args+=(--build-arg "$arg"); done
  mkdir -p "$WORK/logs"
  start=$(date +%s)
  log "$name: building ${IMAGE[$name]} (log: ${logfile#"$REPO"/})"
  if ! "$DOCKER" build --network none --pull=false --rm --force-rm -f "$dockerfile" \
        --label "$LABEL=$hash" -t "${IMAGE[$name]}" "${args[@]}" "$context" 2>&1 \
      | tee "$logfile" | { grep --line-buffered -E '^Step [0-9]+/[0-9]+ : ' || true; } \
      | sed -u -E "s/^Step ([0-9]+\/[0-9]+) : (.{0,90}).*/[images] $name:   \1 \2/" >&2
  then die "$name: docker build failed (see $logfile)"; fi
  [[ "$(image_inputs "${IMAGE[$name]}")" == "$hash" ]] || die "$name: docker build failed (see $logfile)"
  log "$name: built in $(elapsed "$start")"
}

# up_to_date NAME HASH: true (and says so) when the image exists with that input hash.
up_to_date() {
  if [[ "$(image_inputs "${IMAGE[$1]}")" == "$2" ]]; then log "$1: ${IMAGE[$1]} is up to date"; return 0; fi
  return 1
}

# The base: debootstrap of Debian's minbase from the host's mirror, security updates from the
# host's apt, k8s/images/debian/finish-rootfs.sh, then `docker import`.
build_debian() {
  local finish="$HERE/debian/finish-rootfs.sh" hash rootfs="$WORK/rootfs" mirror start updates
  hash=$( { echo "debootstrap --variant=minbase $SUITE"; cat "$finish"; } | sha256sum | cut -d' ' -f1)
  up_to_date debian "$hash" && return
  [[ $EUID == 0 ]] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || {
    log "installing Debian's debootstrap (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 debootstrap >/dev/null \
      || die "could not install debootstrap"
  }
  mirror=$(host_mirror)
  [[ -n $mirror ]] || die "the host's apt sources have no $SUITE archive to debootstrap from"
  start=$(date +%s)
  log "debian: debootstrap --variant=minbase $SUITE (about 2 minutes; log: ${WORK#"$REPO"/}/logs/debian.log)"
  mkdir -p "$WORK/logs" "$WORK/debootstrap-cache"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --cache-dir="$WORK/debootstrap-cache" "$SUITE" "$rootfs" "$mirror" \
    >"$WORK/logs/debian.log" 2>&1 || die "debootstrap failed (see $WORK/logs/debian.log)"
  log "debian: debootstrap done in $(elapsed "$start"); adding security and point-release updates"
  updates="$rootfs/tmp/updates"
  mkdir -p "$updates/partial"
  apt_for "$rootfs/var/lib/dpkg/status" -o Dir::Cache::archives="$updates" dist-upgrade -y -qq --download-only \
    >>"$WORK/logs/debian.log" 2>&1 || die "apt could not fetch the base's updates (see $WORK/logs/debian.log)"
  if compgen -G "$updates/*.deb" >/dev/null; then
    log "debian: installing $(find "$updates" -maxdepth 1 -name '*.deb' | wc -l) updated packages"
    chroot "$rootfs" sh -c 'apt-get install -y -q /tmp/updates/*.deb' >>"$WORK/logs/debian.log" 2>&1 \
      || die "installing the updates failed (see $WORK/logs/debian.log)"
  fi
  rm -rf "$updates"
  install -m 755 "$finish" "$rootfs/tmp/finish-rootfs.sh"
  chroot "$rootfs" /tmp/finish-rootfs.sh || die "finish-rootfs.sh failed"
  # Nothing of this machine: its mirror's host name appears nowhere in /etc or /var.
  if grep -rIl "$(echo "$mirror" | sed -E 's#^[a-z]+://([^/]+).*#\1#')" "$rootfs/etc" "$rootfs/var" 2>/dev/null; then
    die "the rootfs still names the mirror (files above)"
  fi
  log "debian: importing the rootfs"
  tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "${IMAGE[debian]}" >/dev/null
  printf 'FROM %s\nLABEL %s=%s\n' "${IMAGE[debian]}" "$LABEL" "$hash" \
    | "$DOCKER" build --network none -q -t "${IMAGE[debian]}" - >/dev/null
  rm -rf "$rootfs"
  log "debian: built in $(elapsed "$start")"
}

base_status() {
  # The dpkg status of the base, for resolving what a package adds to it.
  local status="$WORK/debian.dpkg-status"
  if [[ ! -f $status || "$(image_id "${IMAGE[debian]}")" != "$(cat "$status.image" 2>/dev/null)" ]]; then
    "$DOCKER" run --rm --network none "${IMAGE[debian]}" cat /var/lib/dpkg/status >"$status"
    image_id "${IMAGE[debian]}" >"$status.image"
  fi
  echo "$status"
}

# An image from k8s/images/NAME/: its folder, plus what stage_NAME adds, is the context.
build_from_folder() {
  local name=$1 base hash
  local context="$WORK/context/$name"
  base=${IMAGE[${BASE[$name]}]}
  [[ -n "$(image_id "$base")" ]] || die "$name: its base $base is missing"
  rm -rf "$context"; mkdir -p "$context"
  cp -a "$HERE/$name/." "$context/"
  if [[ -n "${PACKAGES[$name]:-}" ]]; then
    # shellcheck disable=SC2086
    fetch_debs "$(base_status)" "$context/debs" ${PACKAGES[$name]}
  fi
  if declare -F "stage_${name//-/_}" >/dev/null; then "stage_${name//-/_}" "$context"; fi
  hash=$( { tree_hash "$context"; image_id "$base"; } | sha256sum | cut -d' ' -f1)
  up_to_date "$name" "$hash" && return
  docker_build "$name" "$context" "$context/Dockerfile" "$hash" "BASE_IMAGE=$base"
}

# Kafka: the broker's jars as stack/install.sh fetches them, plus the admin tools' jars
# (kafka-topics), from k8s/images/kafka/pom.xml (whose parent is stack/kafka/pom.xml).
stage_kafka() {
  local context=$1 pom="$HERE/kafka/pom.xml"
  local libs="$WORK/kafka-libs" stamp="$WORK/kafka-libs.sha256" want
  want=$(cat "$pom" "$REPO/stack/kafka/pom.xml" | sha256sum | cut -d' ' -f1)
  if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    log "kafka: fetching the jars with Maven"
    rm -rf "$libs"
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$libs" \
      >"$WORK/logs/kafka-maven.log" 2>&1 || die "Maven could not fetch the Kafka jars (see $WORK/logs/kafka-maven.log)"
    echo "$want" >"$stamp"
  fi
  rm -f "$context/pom.xml"
  mkdir -p "$context/libs"; cp -l "$libs"/*.jar "$context/libs/"
}

# The database: mongo-java-server's jars and the classes stack/install.sh compiles from stack/mongo.
stage_mongo_java_server() {
  local context=$1
  mkdir -p "$context/libs" "$context/classes"
  cp -l "$CACHE/mongo/libs"/*.jar "$context/libs/"
  cp -l "$CACHE/mongo/classes"/*.class "$context/classes/"
}

# Prometheus: github.com/prometheus/prometheus/cmd/prometheus at the version of the module list in
# k8s/images/prometheus/module (go.mod, go.sum), built on the host with Go from the module proxy,
# kept in the work folder until those inputs change. Only Kubernetes discovery is compiled in: the
# build uses a copy of the Prometheus module (in the work folder) whose plugins/plugins.go is
# k8s/images/prometheus/overlay/plugins.go, so none of the cloud SDKs the full list registers is
# downloaded or compiled (first build: about 2 min here, where the full list took about 30).
stage_prometheus() {
  local context=$1 module="$HERE/prometheus/module" plugins="$HERE/prometheus/overlay/plugins.go"
  local out="$WORK/prometheus-server" src="$WORK/prometheus-src" build="$WORK/prometheus-build" want version
  want=$(cat "$module/go.mod" "$module/go.sum" "$plugins" | sha256sum | cut -d' ' -f1)
  if [[ ! -x $out/prometheus || "$(cat "$out/inputs" 2>/dev/null)" != "$want" ]]; then
    command -v go >/dev/null || die "prometheus: Go is needed to build the server (k8s/cluster/install.sh installs it)"
    version=$(awk '$1 == "github.com/prometheus/prometheus" {print $2}' "$module/go.mod")
    log "prometheus: building Prometheus $(prometheus_release "$version") from Go modules, Kubernetes discovery only (log: ${WORK#"$REPO"/}/logs/prometheus-go.log)"
    rm -rf "$out" "$src" "$build"; mkdir -p "$out" "$build"
    cp "$module/go.mod" "$module/go.sum" "$build/"
    {
      (cd "$build" && go mod download "github.com/prometheus/prometheus@$version") &&
      cp -r "$(cd "$build" && go list -m -f '{{.Dir}}' github.com/prometheus/prometheus)" "$src" &&
      chmod -R u+w "$src" && cp "$plugins" "$src/plugins/plugins.go" &&
      (cd "$build" && go mod edit -replace "github.com/prometheus/prometheus=$src" &&
       CGO_ENABLED=0 go build -trimpath -mod=mod -o "$out/prometheus" \
         -ldflags "-s -w -X github.com/prometheus/common/version.Version=$(prometheus_release "$version")" \
         github.com/prometheus/prometheus/cmd/prometheus)
    } >"$WORK/logs/prometheus-go.log" 2>&1 || die "prometheus: go build failed (see $WORK/logs/prometheus-go.log)"
    rm -rf "$src" "$build"
    echo "$want" >"$out/inputs"
  fi
  rm -rf "$context/module"
  cp -l "$out/prometheus" "$context/prometheus"
}

# Module v0.MMP.P is Prometheus M.MP.P (v0.305.0: 3.5.0).
prometheus_release() {
  echo "$1" | sed -E 's/^v0\.([0-9])0?([0-9]+)\.([0-9]+)$/\1.\2.\3/'
}

# The services: the project's Dockerfile at the root, on the Python base, its context the
# repository (filtered by .dockerignore: requirements.txt, services/, loadgen/, the wheelhouse).
build_services() {
  local base=${IMAGE[python]} hash
  prepare_wheelhouse
  hash=$( { tree_hash "$REPO/services" "$REPO/loadgen" "$WHEELHOUSE"
            sha256sum "$REPO/Dockerfile" "$REPO/.dockerignore" "$REPO/requirements.txt"
            image_id "$base"; } | sha256sum | cut -d' ' -f1)
  up_to_date services "$hash" && return
  docker_build services "$REPO" "$REPO/Dockerfile" "$hash" "BASE_IMAGE=$base"
}

# `build.sh list`: the images the chart runs (not the bases), one per line, e.g. to load them
# into the cluster.
if [[ "${1:-}" == list ]]; then
  for name in "${ORDER[@]}"; do
    [[ -n "${BASE[$name]:-}" && ! " ${BASE[*]} " == *" $name "* ]] && echo "${IMAGE[$name]}"
  done
  exit 0
fi
# `build.sh wheelhouse`: only the services' wheelhouse (for a plain `docker build .`; no dockerd needed).
if [[ "${1:-}" == wheelhouse ]]; then
  bash "$REPO/stack/install.sh" venv
  prepare_wheelhouse
  exit 0
fi
wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${ORDER[@]}")
for name in "${wanted[@]}"; do [[ -n "${IMAGE[$name]:-}" ]] || die "unknown image '$name' (${ORDER[*]})"; done

start_all=$(date +%s)
# The jars and the Python env the images take from the local stack's install (idempotent).
bash "$REPO/stack/install.sh" venv mongo kafka
"$DOCKER" version >/dev/null 2>&1 || die "dockerd does not answer: run k8s/cluster/docker.sh start (or make images)"
# The packages are resolved by the host's apt against the base: it must know Debian $SUITE.
[[ -n "$(host_mirror)" ]] || die "the host's apt sources have no Debian $SUITE archive (the images are Debian $SUITE)"
mkdir -p "$WORK/logs"
for name in "${ORDER[@]}"; do
  [[ " ${wanted[*]} " == *" $name "* ]] || continue
  case $name in
    debian) build_debian ;;
    services) build_services ;;
    *) build_from_folder "$name" ;;
  esac
done
# The images these builds replaced (untagged, with our label): only ours are removed.
"$DOCKER" image prune --force --filter "label=$LABEL" >/dev/null
log "done in $(elapsed "$start_all"); sizes:"
for name in "${ORDER[@]}"; do
  [[ " ${wanted[*]} " == *" $name "* ]] || continue
  "$DOCKER" image inspect -f '{{.Size}}' "${IMAGE[$name]}" \
    | awk -v n="${IMAGE[$name]}" '{printf "[images]   %-34s %6.0f MB\n", n, $1 / 1e6}' >&2
done
