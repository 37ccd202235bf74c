#!/usr/bin/env bash
# Starts and stops Debian's Docker engine for the project's image builds, by pid, and
# leaves nothing behind: nothing on this machine starts dockerd, so whoever needs it
# (image builds, `make cluster-load`) uses this one helper.
#
#   k8s/cluster/docker.sh start        start dockerd (no-op when ours is running); waits until it answers
#   k8s/cluster/docker.sh stop         stop it by pid; remove docker0, Docker's iptables chains and
#                                      restore the FORWARD policy it changed
#   k8s/cluster/docker.sh status       running or not (exit 0 when running)
#   k8s/cluster/docker.sh run CMD...   run CMD with dockerd up; stops it afterwards only if this call started it
#
# Inside CMD (and after `start`), use "$DOCKER" or /usr/bin/docker: /usr/local/bin/docker on
# this kind of machine is not Debian's client. State: .cache/docker/ (pid, log, saved policy);
# the engine's own data stays in /var/lib/docker (images survive a stop).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DOCKER_DIR="${SCALESHOP_CACHE:-$REPO/.cache}/docker"
PIDFILE="$DOCKER_DIR/dockerd.pid"
LOGFILE="$DOCKER_DIR/dockerd.log"
POLICYFILE="$DOCKER_DIR/forward-policy.orig"
export DOCKER=/usr/bin/docker

log() { printf '[docker] %s\n' "$*" >&2; }

# running: our dockerd is up (a stale pid file may name another process: ours has our pid file in its command line)
running() { [[ -f $PIDFILE && $(tr '\0' ' ' 2>/dev/null <"/proc/$(cat "$PIDFILE")/cmdline") == *"$DOCKER_DIR/"* ]]; }

ensure_installed() {
  [[ -x /usr/sbin/dockerd && -x $DOCKER ]] && return
  log "installing Debian's docker.io (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null; }
}

start() {
  if running; then log "dockerd already running (pid $(cat "$PIDFILE"))"; return 0; fi
  ensure_installed
  mkdir -p "$DOCKER_DIR"
  [[ -f $POLICYFILE ]] || iptables -S FORWARD | awk '$1=="-P"{print $3}' >"$POLICYFILE"
  log "starting dockerd (log: $LOGFILE)"
  setsid /usr/sbin/dockerd --pidfile "$DOCKER_DIR/dockerd.self.pid" --host unix:///var/run/docker.sock \
    >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 60); do
    $DOCKER version >/dev/null 2>&1 && { log "dockerd up (pid $(cat "$PIDFILE"))"; return 0; }
    running || break
    sleep 0.5
  done
  log "dockerd did not come up; last log lines:"; tail -n 20 "$LOGFILE" >&2
  stop; return 1
}

stop() {
  if running; then
    local pid; pid=$(cat "$PIDFILE")
    log "stopping dockerd (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PIDFILE"
  # what the engine leaves in the host's network: docker0 and its iptables chains
  ip link del docker0 2>/dev/null || true
  local table rule chain
  for table in filter nat; do
    iptables -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*(-j DOCKER|docker0)' | grep -vE '^-A DOCKER' | sed 's/^-A/-D/' |
      while read -r rule; do eval iptables -t "$table" "$rule" 2>/dev/null || true; done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  if [[ -f $POLICYFILE ]]; then
    iptables -P FORWARD "$(cat "$POLICYFILE")" && rm -f "$POLICYFILE"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "dockerd running (pid $(cat "$PIDFILE"))"; else echo "dockerd not running"; exit 1; fi ;;
  run)
    shift; [[ $# -gt 0 ]] || { echo "usage: $0 run CMD..." >&2; exit 2; }
    started=0; running || { start; started=1; }
    rc=0; "$@" || rc=$?
    [[ $started == 1 ]] && stop
    exit "$rc" ;;
  *) echo "usage: $0 {start|stop|status|run CMD...}" >&2; exit 2 ;;
esac
