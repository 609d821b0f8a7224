# shellcheck shell=bash disable=SC2034
# Shared helpers for scripts/up, scripts/down and scripts/bench. Sourced, never executed.
#
# Layout of the state directory ($FERROBASE_HOME, default <repo>/.ferrobase):
#   pg/            PostgreSQL data directory (owned by the `postgres` user when we run as root)
#   redis/         Redis working directory (no persistence is configured)
#   logs/<name>.log
#   run/<name>.pid, run/<name>.env (the environment a process was started with)
#   ports.env      ports chosen by scripts/up, reused on the next run
#   secrets.env    the generated JWT secret (mode 600)
#   keys.env       API keys minted for that secret (mode 600)
#   local.env      what clients and tests need: URL, keys, database URL
#   mail/          the auth service's development outbox (one JSON file per mail)

FERROBASE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FERROBASE_HOME=${FERROBASE_HOME:-$FERROBASE_ROOT/.ferrobase}

# Services the gateway can route to, in start order. A service is started only
# when its binary ferrobase-<name> exists in the build directory.
FERROBASE_SERVICES=(auth rest storage realtime meta)

log() { printf '%s\n' "ferrobase: $*" >&2; }
die() { printf '%s\n' "ferrobase: error: $*" >&2; exit 1; }

profile_dir() {
  case "${FERROBASE_PROFILE:-release}" in
    release) echo release ;;
    debug | dev) echo debug ;;
    *) die "FERROBASE_PROFILE must be 'release' or 'debug', not '${FERROBASE_PROFILE}'" ;;
  esac
}

# Where the binaries are: FERROBASE_BIN_DIR, else <target>/<profile>.
bin_dir() {
  if [[ -n ${FERROBASE_BIN_DIR:-} ]]; then
    echo "$FERROBASE_BIN_DIR"
  else
    echo "${CARGO_TARGET_DIR:-$FERROBASE_ROOT/target}/$(profile_dir)"
  fi
}

# PostgreSQL server binaries: FERROBASE_PG_BIN, else the newest
# /usr/lib/postgresql/<major>/bin with major >= 15, else pg_config --bindir.
find_pg_bin() {
  if [[ -n ${FERROBASE_PG_BIN:-} ]]; then
    [[ -x $FERROBASE_PG_BIN/postgres ]] || die "FERROBASE_PG_BIN=$FERROBASE_PG_BIN has no postgres binary"
    echo "$FERROBASE_PG_BIN"
    return 0
  fi
  local dir major best="" best_major=0
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/postgres && -x $dir/initdb && -x $dir/pg_ctl ]] || continue
    major=$(basename "$(dirname "$dir")")
    [[ $major =~ ^[0-9]+$ ]] || continue
    if ((major >= 15 && major > best_major)); then
      best=$dir
      best_major=$major
    fi
  done
  if [[ -z $best ]] && command -v pg_config >/dev/null 2>&1; then
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [[ -n $dir && -x $dir/postgres && -x $dir/initdb ]]; then
      major=$("$dir/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')
      ((major >= 15)) && best=$dir
    fi
  fi
  [[ -n $best ]] || return 1
  echo "$best"
}

# apt_install <package...>: installs Debian/Ubuntu packages with apt-get, through
# sudo when not root. A PostgreSQL server package does not create and start a
# cluster of its own on port 5432.
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "missing $* and apt-get is not available: install them, then retry"
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "installing $* needs root (or sudo)"
    sudo=(sudo)
  fi
  log "installing $* with apt-get"
  local no_cluster=/etc/postgresql-common/createcluster.d/ferrobase-no-main-cluster.conf
  if [[ " $* " == *" postgresql"* ]]; then
    "${sudo[@]}" mkdir -p "$(dirname "$no_cluster")"
    echo 'create_main_cluster = false' | "${sudo[@]}" tee "$no_cluster" >/dev/null
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  "${sudo[@]}" rm -f "$no_cluster"
}

# Run a PostgreSQL server command as the `postgres` user when we are root
# (initdb and postgres refuse to run as root), directly otherwise.
as_pg() {
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# read_value <file> <key>: the value of KEY=VALUE (last one wins), quotes removed.
read_value() {
  [[ -f $1 ]] || return 0
  local line value=""
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line == "$2="* ]]; then
      value=${line#"$2="}
    fi
  done <"$1"
  if [[ $value == \'*\' ]]; then
    value=${value:1:${#value}-2}
    value=${value//"'\''"/"'"}
  fi
  printf '%s' "$value"
}

# env_line <key> <value>: KEY=VALUE, single-quoted when the value needs it (readable by bash and dotenv).
env_line() {
  if [[ $2 =~ ^[A-Za-z0-9._:/@=+,-]*$ ]]; then
    printf '%s=%s\n' "$1" "$2"
  else
    printf "%s='%s'\n" "$1" "${2//"'"/"'\''"}"
  fi
}

pid_file() { echo "$FERROBASE_HOME/run/$1.pid"; }

# Prints the pid recorded for <name> when that process is alive and is still
# the program we started (the pid was not recycled); removes a stale pid file.
# usage: live_pid <name> <program path or name found in its command line>
live_pid() {
  local file pid cmdline
  file=$(pid_file "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ $cmdline == *"$2"* ]]; then
      echo "$pid"
      return 0
    fi
  fi
  log "removing stale pid file $file"
  rm -f "$file"
  return 1
}

# Sends SIGTERM, waits up to <seconds>, then SIGKILL. usage: stop_pid <name> <pid> <seconds>
stop_pid() {
  local name=$1 pid=$2 deadline=$((SECONDS + $3))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "$name (pid $pid) did not stop in $3 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  # A killed process may take a moment to be reaped.
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

# How long <name> may take to stop: the drain time it was started with
# (FERROBASE_SHUTDOWN_GRACE_MS in run/<name>.env, 10 s by default) plus a margin.
grace_of() {
  local ms
  ms=$(read_value "$FERROBASE_HOME/run/$1.env" FERROBASE_SHUTDOWN_GRACE_MS)
  [[ $ms =~ ^[0-9]+$ ]] || ms=10000
  echo $(((ms + 999) / 1000 + 5))
}

# True when nothing listens on 127.0.0.1:<port> and it can be bound.
port_free() {
  local port=$1
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    return 1
  fi
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$port" <<'PY' 2>/dev/null || return 1
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
PY
  fi
  return 0
}

show_log_tail() {
  local file=$1
  if [[ -s $file ]]; then
    printf '%s\n' "---- last lines of $file ----" >&2
    tail -n "${2:-40}" "$file" >&2
    printf '%s\n' "----" >&2
  else
    printf '%s\n' "($file is empty)" >&2
  fi
}
