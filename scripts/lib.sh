# shellcheck shell=bash
# Shared shell functions for scripts/quickstart.sh and scripts/test.sh.
#
# Host setup for Debian 12 machines without systemd (see DESIGN.md §5): idempotent apt
# installs, dockerd started by hand, the local busybox image (no registry is reachable),
# and a PostgreSQL cluster with a password role. Every function is safe to call again.
#
# Source it after `set -euo pipefail`; it defines functions and a few variables only.

# Use Debian's docker CLI: /usr/local/bin/docker may be a different (newer) client.
DOCKER=/usr/bin/docker
BUSYBOX_IMAGE=local/busybox:latest
APT_OPTS=(-o DPkg::Lock::Timeout=600)
_APT_UPDATED=0

# ---------------------------------------------------------------- output

say() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Microseconds since the epoch (bash 5's EPOCHREALTIME, separator stripped).
now_us() { printf '%s\n' "${EPOCHREALTIME//[!0-9]/}"; }

# fmt_duration START_US -> "12.3s" (elapsed since START_US)
fmt_duration() {
  local start=$1 end
  end=$(now_us)
  local tenths=$(((end - start) / 100000))
  printf '%d.%ds\n' $((tenths / 10)) $((tenths % 10))
}

# Last lines of a log file, indented, to explain a failure.
log_tail() {
  local file=$1 lines=${2:-40}
  if [[ -f $file ]]; then
    printf -- '--- last %s lines of %s ---\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2 || true
    printf -- '--- end of %s ---\n' "$file" >&2
  else
    printf '(no log file at %s)\n' "$file" >&2
  fi
}

# ---------------------------------------------------------------- privileges and toolchain

# require_root SCRIPT ARGS...: re-executes SCRIPT as root through sudo when needed, keeping
# PATH, the Rust toolchain locations and THECLOUD_* settings. Returns when already root.
require_root() {
  local script=$1
  shift
  [[ $(id -u) -eq 0 ]] && return 0
  if ! command -v sudo >/dev/null 2>&1; then
    die "this script must run as root (it installs packages and starts dockerd); sudo is not installed. Run it as root, e.g.: su -c '$script $*'"
  fi
  local keep=("PATH=$PATH")
  local home
  home=$(home_dir)
  keep+=("CARGO_HOME=${CARGO_HOME:-$home/.cargo}" "RUSTUP_HOME=${RUSTUP_HOME:-$home/.rustup}")
  local name
  while read -r name; do
    [[ $name == THECLOUD_* || $name == CARGO_TARGET_DIR ]] && keep+=("$name=${!name}")
  done < <(compgen -e)
  say "Not running as root: re-running with sudo"
  exec sudo env "${keep[@]}" bash "$script" "$@"
}

# The invoking user's home directory, even when HOME is not set.
home_dir() {
  if [[ -n ${HOME:-} ]]; then
    printf '%s\n' "$HOME"
  else
    getent passwd "$(id -u)" | cut -d: -f6
  fi
}

# Puts rustup's default bin dir on PATH when cargo is not found (e.g. non-login shells).
ensure_cargo_on_path() {
  if ! command -v cargo >/dev/null 2>&1; then
    local dir
    dir=${CARGO_HOME:-$(home_dir)/.cargo}/bin
    [[ -x $dir/cargo ]] && PATH="$dir:$PATH" && export PATH
  fi
  return 0
}

# Stops with install instructions when there is no Rust toolchain.
require_cargo() {
  ensure_cargo_on_path
  if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'EOF'
ERROR: cargo (Rust) is not installed.
Install the Rust toolchain with rustup, then run this script again:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"

(The workspace needs Rust 1.94 or newer; see rust-version in Cargo.toml.)
EOF
    exit 1
  fi
}

# ---------------------------------------------------------------- packages

pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == "ii"* ]]
}

# ensure_packages PKG...: installs the packages that are missing; runs `apt-get update`
# only when something must be installed (and at most once per script run).
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    info "packages present: $*"
    return 0
  fi
  local t0
  t0=$(now_us)
  export DEBIAN_FRONTEND=noninteractive
  if ((_APT_UPDATED == 0)); then
    info "apt-get update"
    apt-get "${APT_OPTS[@]}" update -qq
    _APT_UPDATED=1
  fi
  info "installing: ${missing[*]}"
  apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}"
  info "installed in $(fmt_duration "$t0")"
}

# ---------------------------------------------------------------- libvirt / QEMU

LIBVIRT_URI=qemu:///system

libvirt_up() { virsh -c "$LIBVIRT_URI" version >/dev/null 2>&1; }

# ensure_libvirt: libvirt 9.0 (bookworm, matching the libvirt-dev the agent links against) with
# QEMU 10 from bookworm-backports (matching the preinstalled qemu-utils 10; bookworm's QEMU 7.2
# would remove it), plus genisoimage for cloud-init seeds; then virtlogd and libvirtd started by
# hand (no systemd). Backports is used through a private apt source list, so /etc/apt is not
# modified. Idempotent. See ../shared/HOST-NOTES.md ("20-libvirt.sh").
ensure_libvirt() {
  local need=0 p
  for p in libvirt-daemon-system libvirt-clients qemu-system-x86 genisoimage; do
    pkg_installed "$p" || need=1
  done
  if ((need)); then
    local t0 bpo mirror
    t0=$(now_us)
    bpo=${TMPDIR:-/tmp}/thecloud-apt-bpo
    mkdir -p "$bpo/parts" "$bpo/lists/partial" "$bpo/cache/archives/partial"
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $mirror ]] || mirror=http://deb.debian.org/debian
    cp /etc/apt/sources.list.d/debian.sources "$bpo/parts/debian.sources" 2>/dev/null || true
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" >"$bpo/parts/backports.sources"
    : >"$bpo/sources.list"
    local o=("${APT_OPTS[@]}" -o "Dir::Etc::SourceList=$bpo/sources.list" -o "Dir::Etc::SourceParts=$bpo/parts"
      -o "Dir::State::Lists=$bpo/lists" -o "Dir::Cache=$bpo/cache")
    export DEBIAN_FRONTEND=noninteractive
    info "installing libvirt + QEMU (backports) + genisoimage"
    apt-get "${o[@]}" update -qq
    apt-get "${o[@]}" install -y -qq --no-install-recommends \
      libvirt-daemon-system libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev \
      dnsmasq-base genisoimage qemu-utils/bookworm-backports \
      qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
      qemu-system-data/bookworm-backports seabios/bookworm-backports
    info "installed in $(fmt_duration "$t0")"
  fi
  # udev is not running: give /dev/kvm the owner and mode libvirt's qemu user expects.
  if [[ -e /dev/kvm ]]; then
    chgrp kvm /dev/kvm 2>/dev/null || true
    chmod 660 /dev/kvm 2>/dev/null || true
  fi
  if libvirt_up; then
    info "libvirtd already running"
    return 0
  fi
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  local i
  for i in $(seq 1 300); do
    libvirt_up && { info "libvirtd up"; return 0; }
    sleep 0.1
  done
  die "libvirtd did not answer on $LIBVIRT_URI within 30 s"
}

# ---------------------------------------------------------------- docker

docker_up() { "$DOCKER" info >/dev/null 2>&1; }

# Starts dockerd by hand (no systemd here) unless it answers, then waits for it.
ensure_dockerd() {
  local log=/var/log/dockerd.log
  if docker_up; then
    info "dockerd is running ($("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    return 0
  fi
  local pid=""
  [[ -r /var/run/docker.pid ]] && pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [[ -n $pid ]] && pid_is "$pid" dockerd; then
    info "dockerd (pid $pid) is starting; waiting for it"
  else
    local dockerd=/usr/sbin/dockerd
    [[ -x $dockerd ]] || dockerd=$(command -v dockerd) || die "dockerd not found (is docker.io installed?)"
    info "starting $dockerd (log: $log)"
    # shellcheck disable=SC2016 # $1/$2 expand in the inner shell
    setsid -f sh -c 'exec "$1" >>"$2" 2>&1 </dev/null' sh "$dockerd" "$log"
  fi
  local i
  for ((i = 0; i < 150; i++)); do
    if docker_up; then
      info "dockerd is up: $("$DOCKER" info --format '{{.ServerVersion}} storage={{.Driver}} cgroup={{.CgroupDriver}} v{{.CgroupVersion}}')"
      return 0
    fi
    sleep 0.2
  done
  log_tail "$log"
  die "dockerd did not answer within 30 s (log: $log)"
}

# Builds local/busybox:latest from the host's busybox-static if the image is absent
# (no image registry is reachable from these machines), then smoke-tests it.
ensure_busybox_image() {
  if "$DOCKER" image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
    info "image $BUSYBOX_IMAGE present"
  else
    local bb=/bin/busybox
    [[ -x $bb ]] || die "$bb not found (install busybox-static)"
    info "building $BUSYBOX_IMAGE from $bb (docker import)"
    local root
    root=$(mktemp -d)
    mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root,mnt,var,run}
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    local applet
    for applet in $("$bb" --list); do
      [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    if ! tar -C "$root" -c . | "$DOCKER" import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$BUSYBOX_IMAGE" >/dev/null; then
      rm -rf "$root"
      die "docker import of $BUSYBOX_IMAGE failed"
    fi
    rm -rf "$root"
  fi
  local out
  out=$("$DOCKER" run --rm "$BUSYBOX_IMAGE" echo image-ok 2>&1) ||
    die "cannot run a container from $BUSYBOX_IMAGE: $out"
  info "docker run $BUSYBOX_IMAGE: $out"
}

# ---------------------------------------------------------------- postgresql

# The newest installed PostgreSQL major version (15 on Debian 12).
pg_major() {
  local v
  v=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)
  [[ -n $v ]] || die "no PostgreSQL server found under /usr/lib/postgresql (install postgresql)"
  printf '%s\n' "$v"
}

# psql as the postgres superuser over the Unix socket; SQL on stdin or via -c.
pg_super() {
  (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@")
}

# ensure_postgres ROLE PASSWORD DB: starts (or creates) the cluster "<major> $PG_CLUSTER"
# (default "main"), then makes sure a LOGIN CREATEDB role with that password and a database
# it owns exist. Sets PG_PORT to the cluster's port.
ensure_postgres() {
  local role=$1 password=$2 db=$3 major cluster=${PG_CLUSTER:-main}
  major=$(pg_major)
  # pg_lsclusters -h columns: version cluster port status owner datadir logfile
  _pg_cluster_field() { pg_lsclusters -h | awk -v v="$major" -v c="$cluster" -v f="$1" '$1 == v && $2 == c { print $f }'; }
  if [[ -z $(_pg_cluster_field 2) ]]; then
    info "creating cluster $major $cluster"
    pg_createcluster "$major" "$cluster" >/dev/null
  fi
  PG_PORT=$(_pg_cluster_field 3)
  if [[ $(_pg_cluster_field 4) == online* ]]; then
    info "cluster $major $cluster is online (port $PG_PORT)"
  else
    info "starting cluster $major $cluster (port $PG_PORT)"
    pg_ctlcluster "$major" "$cluster" start
  fi
  local i
  for ((i = 0; i < 150; i++)); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.2
  done
  if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
    log_tail "$(_pg_cluster_field 7)"
    die "PostgreSQL $major $cluster does not accept connections on 127.0.0.1:$PG_PORT"
  fi
  # The role: created if missing; LOGIN, CREATEDB and the password are (re)set every time,
  # so a role left over from elsewhere ends up usable too.
  if [[ $(pg_super -At -v role="$role" <<<"SELECT 1 FROM pg_roles WHERE rolname = :'role'") != 1 ]]; then
    info "creating role $role"
    pg_super -v role="$role" <<<"SELECT format('CREATE ROLE %I', :'role') \gexec"
  fi
  pg_super -v role="$role" -v pw="$password" <<<"SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pw') \gexec"
  if [[ $(pg_super -At -v db="$db" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'") != 1 ]]; then
    info "creating database $db owned by $role"
    pg_super -v db="$db" -v role="$role" <<<"SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') \gexec"
  else
    pg_super -v db="$db" -v role="$role" <<<"SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role') \gexec"
  fi
  local v
  v=$(PGPASSWORD=$password psql -X -h 127.0.0.1 -p "$PG_PORT" -U "$role" -d "$db" -Atc 'show server_version') ||
    die "role $role cannot log in to $db over 127.0.0.1:$PG_PORT"
  info "role $role logs in to database $db over 127.0.0.1:$PG_PORT (server $v)"
}

# ---------------------------------------------------------------- processes and ports

# pid_is PID NAME: true when PID is alive and its program's basename is NAME.
pid_is() {
  local pid=$1 name=$2 exe
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  exe=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1)
  [[ ${exe##*/} == "$name" ]]
}

# pidfile_running FILE NAME: prints the pid and succeeds when FILE names a live NAME process.
pidfile_running() {
  local file=$1 name=$2 pid
  [[ -r $file ]] || return 1
  pid=$(cat "$file" 2>/dev/null || true)
  pid_is "$pid" "$name" || return 1
  printf '%s\n' "$pid"
}

# port_open HOST PORT: something accepts TCP connections there.
port_open() {
  local host=${1#[}
  host=${host%]}
  (exec 3<>"/dev/tcp/$host/$2") 2>/dev/null
}

# normalize_addr VALUE DEFAULT_HOST: "8080" -> "127.0.0.1:8080"; "HOST:PORT" unchanged.
normalize_addr() {
  local v=$1
  if [[ $v =~ ^[0-9]+$ ]]; then
    printf '%s:%s\n' "${2:-127.0.0.1}" "$v"
  elif [[ $v =~ ^.+:[0-9]+$ ]]; then
    printf '%s\n' "$v"
  else
    die "bad address '$v': expected HOST:PORT or PORT"
  fi
}

# client_addr ADDR: a listen address as a client dials it (0.0.0.0/[::] -> loopback).
client_addr() {
  local host=${1%:*} port=${1##*:}
  case $host in
  0.0.0.0 | "") host=127.0.0.1 ;;
  "[::]") host="[::1]" ;;
  esac
  printf '%s:%s\n' "$host" "$port"
}
