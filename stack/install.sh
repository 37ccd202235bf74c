#!/usr/bin/env bash
# Installs every real server and the Python environment the local stack needs,
# idempotently, into the git-ignored cache folder (default: <repo>/.cache).
#
#   .cache/venv/            Python virtualenv with requirements-dev.txt
#   .cache/debian/          memcached and nginx, unpacked from Debian's packages
#   .cache/prometheus/      Debian's Prometheus and its nginx exporter, unpacked (pinned versions)
#   .cache/mongo/           the local database: mongo-java-server jars (Maven, stack/mongo/pom.xml)
#                           and our launcher and secondary indexes compiled from stack/mongo/*.java
#   .cache/bin/ferretdb     FerretDB 1.x (SQLite backend), built with `go install`: the previous
#                           local database, kept to migrate old data folders and for `make bench`
#   .cache/kafka/libs/      Apache Kafka broker jars, fetched by Maven (stack/kafka/pom.xml)
#   .cache/bin/helm         Helm 3, built with `go install` (the local gateway's nginx.conf, chart checks, kind-up)
#   .cache/bin/actionlint   actionlint, built with `go install`, and Debian's shellcheck (system-wide):
#                           they check the users' CI workflow (.github/workflows/cluster.yml)
#   chromium (system-wide)  Debian's Chromium, driven headless by Playwright (venv) in the browser tests
#   .cache/postgresql/      Debian's PostgreSQL 15, unpacked: only for `make bench` (FerretDB on
#                           PostgreSQL); not a default part, `make bench` asks for it
#
# Each part records a stamp of its inputs; a second run that finds every stamp
# current does nothing and takes seconds.
# Usage: stack/install.sh [venv|debian|prometheus|mongo|ferretdb|kafka|helm|actionlint|browser]...
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SCALESHOP_CACHE:-$REPO/.cache}"
mkdir -p "$CACHE/bin" "$CACHE/stamps"

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }

# stamp_ok NAME INPUT...: true when the inputs' hash equals the recorded one.
inputs_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() { local name=$1; shift; [[ -f "$CACHE/stamps/$name" && "$(cat "$CACHE/stamps/$name")" == "$(inputs_hash "$@")" ]]; }
stamp_write() { local name=$1; shift; inputs_hash "$@" >"$CACHE/stamps/$name"; }

apt_updated=0
apt_update_once() {
  if [[ $apt_updated == 0 ]]; then
    log "apt-get update"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt_updated=1
  fi
}

install_venv() {
  local reqs=("$REPO/requirements.txt" "$REPO/requirements-dev.txt")
  if [[ -x "$CACHE/venv/bin/python" ]] && stamp_ok venv "${reqs[@]}"; then return; fi
  log "creating Python virtualenv in $CACHE/venv"
  command -v python3 >/dev/null || die "python3 (3.11 or newer) is needed"
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install --quiet --upgrade pip >/dev/null
  "$CACHE/venv/bin/pip" install --quiet -r "$REPO/requirements-dev.txt"
  stamp_write venv "${reqs[@]}"
}

# unpack_debian_packages DEST PACKAGE...: download the packages with apt and unpack them into
# DEST (made anew); nothing is installed system-wide and no service is started.
unpack_debian_packages() {
  local root=$1; shift
  local debs="$root-debs"
  rm -rf "$debs" "$root"; mkdir -p "$debs" "$root"
  log "fetching $* from Debian"
  if ! (cd "$debs" && apt-get download -qq "$@" >/dev/null 2>&1); then
    apt_update_once
    (cd "$debs" && apt-get download -qq "$@" >/dev/null 2>&1) || die "apt-get download $* failed"
  fi
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$root"; done
  rm -rf "$debs"
}

# Debian's memcached and nginx, unpacked (not installed: no service is started
# and nothing is written outside the cache folder).
DEBIAN_PACKAGES=(memcached nginx)
DEBIAN_RUNTIME_LIBS=(libevent-2.1-7 libsasl2-2 libpcre2-8-0 libssl3 zlib1g libcrypt1)
install_debian() {
  local root="$CACHE/debian"
  local bins=("$root/usr/bin/memcached" "$root/usr/sbin/nginx")
  if [[ -x ${bins[0]} && -x ${bins[1]} ]] && stamp_ok debian "$0"; then return; fi
  command -v apt-get >/dev/null || die "apt-get is needed to fetch ${DEBIAN_PACKAGES[*]}"
  unpack_debian_packages "$root" "${DEBIAN_PACKAGES[@]}"
  if ldd "${bins[@]}" | grep -q 'not found'; then
    log "installing the shared libraries memcached and nginx link against"
    apt_update_once
    apt-get install -y -qq --no-install-recommends "${DEBIAN_RUNTIME_LIBS[@]}" >/dev/null \
      || die "could not install ${DEBIAN_RUNTIME_LIBS[*]}"
    if ldd "${bins[@]}" | grep 'not found'; then die "libraries still missing (above)"; fi
  fi
  stamp_write debian "$0"
}

# Debian's Prometheus and its nginx exporter (the gateway's stub_status as metrics), unpacked like
# memcached and nginx into a folder of their own: the stack runs them as processes (stack/monitoring.py).
# Both are Go programs that need nothing but the C library.
PROMETHEUS_PACKAGES=(prometheus=2.42.0+ds-5+deb12u1 prometheus-nginx-exporter=0.11.0-1+b4)
install_prometheus() {
  local root="$CACHE/prometheus"
  local bins=("$root/usr/bin/prometheus" "$root/usr/bin/prometheus-nginx-exporter")
  if [[ -x ${bins[0]} && -x ${bins[1]} ]] && stamp_ok prometheus <(printf '%s\n' "${PROMETHEUS_PACKAGES[@]}"); then return; fi
  command -v apt-get >/dev/null || die "apt-get is needed to fetch ${PROMETHEUS_PACKAGES[*]}"
  unpack_debian_packages "$root" "${PROMETHEUS_PACKAGES[@]}"
  if ldd "${bins[@]}" 2>/dev/null | grep 'not found'; then die "libraries of Prometheus missing (above)"; fi
  "${bins[0]}" --version 2>&1 | head -n 1 >&2
  stamp_write prometheus <(printf '%s\n' "${PROMETHEUS_PACKAGES[@]}")
}

install_ferretdb() {
  local src="$REPO/stack/ferretdb"
  if [[ -x "$CACHE/bin/ferretdb" ]] && stamp_ok ferretdb "$src/go.mod" "$src/go.sum" "$src/main.go"; then return; fi
  command -v go >/dev/null || die "Go (1.22 or newer) is needed to build FerretDB"
  log "building FerretDB ($(grep -o 'FerretDB/FerretDB v[0-9.]*' "$src/go.mod" | cut -d' ' -f2)) with go install"
  (cd "$src" && GOBIN="$CACHE/bin" GOFLAGS=-mod=mod go install .) || die "go install of FerretDB failed"
  stamp_write ferretdb "$src/go.mod" "$src/go.sum" "$src/main.go"
}

ensure_java() {
  if command -v java >/dev/null; then return; fi
  log "installing a Java runtime for Kafka and the database"
  apt_update_once
  apt-get install -y -qq --no-install-recommends default-jre-headless >/dev/null || die "could not install Java"
}

ensure_maven() {
  command -v mvn >/dev/null || { apt_update_once; apt-get install -y -qq --no-install-recommends maven >/dev/null; }
}

# mongo-java-server from Maven Central, started by our own launcher (it takes the address,
# port and file; upstream's main binds localhost:27017 only) with the secondary indexes
# upstream lacks (stack/mongo/*.java). javac comes with Debian's JDK.
install_mongo() {
  local src="$REPO/stack/mongo"
  local inputs=("$src/pom.xml" "$src"/*.java)
  if [[ -f "$CACHE/mongo/classes/ScaleshopMongo.class" ]] && stamp_ok mongo "${inputs[@]}"; then return; fi
  ensure_java
  command -v javac >/dev/null || { apt_update_once; apt-get install -y -qq --no-install-recommends default-jdk-headless >/dev/null; }
  ensure_maven
  log "fetching mongo-java-server jars with Maven and compiling its launcher"
  rm -rf "$CACHE/mongo"
  mvn -q -B -f "$src/pom.xml" dependency:copy-dependencies -DoutputDirectory="$CACHE/mongo/libs" >/dev/null \
    || die "Maven could not fetch the mongo-java-server jars"
  javac -d "$CACHE/mongo/classes" -cp "$CACHE/mongo/libs/*" "$src"/*.java \
    || die "could not compile stack/mongo/*.java"
  stamp_write mongo "${inputs[@]}"
}

install_kafka() {
  local pom="$REPO/stack/kafka/pom.xml"
  ensure_java
  if compgen -G "$CACHE/kafka/libs/kafka_2.13-*.jar" >/dev/null && stamp_ok kafka "$pom"; then return; fi
  ensure_maven
  log "fetching Apache Kafka jars with Maven"
  rm -rf "$CACHE/kafka/libs"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$CACHE/kafka/libs" >/dev/null \
    || die "Maven could not fetch the Kafka jars"
  stamp_write kafka "$pom"
}

# Helm 3 from its Go module (no replace directives, so `go install` works). The Kubernetes
# version helm assumes without --kube-version is set the way helm's own Makefile sets it
# (from the client-go it is built with); a plain `go install` would leave it at 1.20.
HELM_VERSION=v3.21.4
HELM_KUBE_VERSION=1.36
install_helm() {
  local want="helm $HELM_VERSION kube $HELM_KUBE_VERSION"
  if [[ -x "$CACHE/bin/helm" ]] && stamp_ok helm <(echo "$want"); then return; fi
  command -v go >/dev/null || die "Go (1.22 or newer) is needed to build helm"
  log "building helm $HELM_VERSION with go install (the first build takes a few minutes)"
  local major=${HELM_KUBE_VERSION%%.*} minor=${HELM_KUBE_VERSION#*.}
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  GOBIN="$CACHE/bin" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    || die "go install of helm $HELM_VERSION failed"
  "$CACHE/bin/helm" version --short | grep -q "^$HELM_VERSION" || die "helm reports $("$CACHE/bin/helm" version --short), not $HELM_VERSION"
  stamp_write helm <(echo "$want")
}

# actionlint, the GitHub Actions workflow linter, from its Go module (it reports the module
# version it was built from), and Debian's shellcheck, which it runs on every `run:` script.
# tests/functional/test_workflow.py lints the users' CI recipe with both: it cannot run here.
ACTIONLINT_VERSION=v1.7.12
install_actionlint() {
  if ! command -v shellcheck >/dev/null; then
    log "installing Debian's shellcheck (actionlint checks the workflow's scripts with it)"
    apt_update_once
    apt-get install -y -qq --no-install-recommends shellcheck >/dev/null || die "could not install shellcheck"
  fi
  if [[ -x "$CACHE/bin/actionlint" ]] && stamp_ok actionlint <(echo "$ACTIONLINT_VERSION"); then return; fi
  command -v go >/dev/null || die "Go (1.24 or newer) is needed to build actionlint"
  log "building actionlint $ACTIONLINT_VERSION with go install (about a minute the first time)"
  GOBIN="$CACHE/bin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" \
    || die "go install of actionlint $ACTIONLINT_VERSION failed"
  "$CACHE/bin/actionlint" -version | head -n 1 | grep -qx "$ACTIONLINT_VERSION" \
    || die "actionlint reports $("$CACHE/bin/actionlint" -version | head -n 1), not $ACTIONLINT_VERSION"
  stamp_write actionlint <(echo "$ACTIONLINT_VERSION")
}

# Debian's PostgreSQL 15 for the database benchmark (FerretDB's postgresql handler), unpacked
# like memcached and nginx. PostgreSQL refuses to run as root, so as root this part also
# creates the system user that owns the benchmark's PostgreSQL data folders and runs the server.
PG_MAJOR=15
PG_USER=scaleshop-pg   # also in stack/dbservers.py
PG_RUNTIME_LIBS=(libicu72 libxml2 libssl3 libldap-2.5-0 libgssapi-krb5-2 libpam0g liblz4-1 libzstd1 libsystemd0 libuuid1 libxslt1.1 tzdata)
install_postgresql() {
  local root="$CACHE/postgresql" bin="$CACHE/postgresql/usr/lib/postgresql/$PG_MAJOR/bin"
  if [[ $EUID == 0 ]] && ! id -u "$PG_USER" >/dev/null 2>&1; then
    log "creating the system user $PG_USER (PostgreSQL does not run as root)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_USER" \
      || die "could not create the user $PG_USER"
  fi
  if [[ -x "$bin/postgres" && -x "$bin/initdb" ]] && stamp_ok postgresql <(echo "postgresql-$PG_MAJOR"); then return; fi
  command -v apt-get >/dev/null || die "apt-get is needed to fetch postgresql-$PG_MAJOR"
  unpack_debian_packages "$root" "postgresql-$PG_MAJOR"
  chmod -R a+rX "$root"  # the unprivileged server reads it
  if ldd "$bin/postgres" "$bin/initdb" | grep -q 'not found' || [[ ! -d /usr/share/zoneinfo ]]; then
    log "installing the shared libraries PostgreSQL links against"
    apt_update_once
    apt-get install -y -qq --no-install-recommends "${PG_RUNTIME_LIBS[@]}" >/dev/null \
      || die "could not install ${PG_RUNTIME_LIBS[*]}"
    if ldd "$bin/postgres" "$bin/initdb" | grep 'not found'; then die "libraries still missing (above)"; fi
  fi
  "$bin/postgres" --version >&2
  stamp_write postgresql <(echo "postgresql-$PG_MAJOR")
}

# Debian's Chromium for the browser tests (Playwright from the venv drives it headless; Playwright's
# own browser download is never used). Installed system-wide: a browser needs dozens of libraries.
# Debian keeps only the current security release of chromium, so the package is not pinned;
# the version in use is logged.
install_browser() {
  if ! command -v chromium >/dev/null; then
    command -v apt-get >/dev/null || die "apt-get is needed to install chromium (the browser tests)"
    log "installing Debian's chromium for the browser tests"
    apt_update_once
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
      || die "could not install chromium"
    chromium --version >&2
  fi
}

parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(venv debian prometheus mongo ferretdb kafka helm actionlint browser)
start=$(date +%s)
for part in "${parts[@]}"; do
  case "$part" in
    venv) install_venv ;;
    debian) install_debian ;;
    prometheus) install_prometheus ;;
    mongo) install_mongo ;;
    ferretdb) install_ferretdb ;;
    kafka) install_kafka ;;
    helm) install_helm ;;
    actionlint) install_actionlint ;;
    postgresql) install_postgresql ;;
    browser) install_browser ;;
    *) die "unknown part '$part' (venv, debian, prometheus, mongo, ferretdb, kafka, helm, actionlint, browser, postgresql)" ;;
  esac
done
log "ready in $(( $(date +%s) - start ))s (cache: $CACHE)"
