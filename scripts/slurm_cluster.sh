#!/usr/bin/env bash
# A throwaway single-node SLURM cluster in a folder of its own, to try `--launcher slurm` on one machine.
#
#   sudo bash scripts/slurm_cluster.sh [--install] start DIR   # then: export SLURM_CONF=DIR/etc/slurm.conf
#   sudo bash scripts/slurm_cluster.sh status DIR
#   sudo bash scripts/slurm_cluster.sh stop DIR
#   sudo bash scripts/slurm_cluster.sh install         # only the packages, when missing (.ci/run)
#
# start: writes DIR/etc/slurm.conf (one node: this machine's CPUs and memory from `slurmd -C`, one
#   partition `debug`, free ports) and slurmdbd.conf, a random munge key, and starts munged, a MariaDB
#   server (DIR/db) with slurmdbd for accounting, slurmctld and slurmd, all as root, with their state,
#   spool, logs (DIR/log) and pid files (DIR/run) in DIR; returns once `srun hostname` answers.
#   Already running: says so and returns 0. A second DIR is a second, independent cluster.
#   Accounting is there because submitit (the pipeline's SLURM launcher) learns a job's end from
#   `sacct`: without it, a job that failed or was cancelled before writing its result is waited for forever.
# stop: cancels the cluster's jobs, then stops only the daemons whose pid files are in DIR (checking
#   that each pid still is that daemon). Nothing running: returns 0.
# status: which daemons run, and `sinfo`; exit 0 when all five run, 3 when none, 1 when some.
# install / --install: apt-get install the Debian packages (slurmctld slurmd slurmdbd slurm-client munge
#   mariadb-server; SLURM 22.05 on Debian 12, about a minute) when a command is missing; without it a
#   missing command is an error that says so.
#
# The munge socket lives in DIR/munge-socket when every folder above DIR may be entered by all (munged
# requires it); otherwise in a folder made with mktemp under /tmp, named in DIR/munge/socket_path.
# Dependent jobs of a failed job are cancelled (DependencyParameters=kill_invalid_depend), as on most
# clusters; without it they would stay pending forever.
set -euo pipefail

PACKAGES="slurmctld slurmd slurmdbd slurm-client munge mariadb-server"
COMMANDS="munged munge mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd srun sbatch squeue scancel scontrol sinfo sacct sacctmgr"
# the order they are stopped in, each group together: slurmctld and slurmdbd write their last
# records on the way out, so the database and munged go last
STOP_GROUPS=("slurmd slurmctld" "slurmdbd" "mariadbd munged")

die() { echo "slurm_cluster: $*" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "$0"; }

# The pid in DIR/run/NAME.pid when that process is still NAME (a stale file, or a reused pid, is not).
daemon_pid() {
  local pidfile="$DIR/run/$1.pid" pid
  [ -s "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

ensure_packages() {
  local missing=() c
  for c in $COMMANDS; do command -v "$c" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$INSTALL" != 1 ]; then
    die "missing command(s): ${missing[*]}. Install the packages ($PACKAGES), e.g. rerun with --install (apt-get, as root)."
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get here: install SLURM and munge yourself."
  echo "slurm_cluster: installing $PACKAGES with apt-get (missing: ${missing[*]})"
  apt-get update -qq
  # the packages' own services must not start: this cluster runs its daemons from DIR
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
}

# A TCP port nobody listens on (bash's /dev/tcp connects when someone does).
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$(( 20000 + RANDOM % 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  die "no free TCP port found"
}

# N distinct free ports, one a line.
free_ports() {
  local ports=() p
  while [ ${#ports[@]} -lt "$1" ]; do
    p="$(free_port)"
    [[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
  done
  printf '%s\n' "${ports[@]}"
}

# munged refuses a socket in a folder that not everybody may enter, all the way up.
socket_dir() {
  local d="$DIR"
  while [ "$d" != "/" ]; do
    [ "$(( 0$(stat -c %a "$d") & 01 ))" -eq 1 ] || { mktemp -d /tmp/objcrop-munge.XXXXXX; return; }
    d="$(dirname "$d")"
  done
  mkdir -p "$DIR/munge-socket"; echo "$DIR/munge-socket"
}

write_config() {
  local node sdir
  mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run" "$DIR/munge"
  chmod 700 "$DIR/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    head -c 1024 /dev/urandom > "$DIR/munge/munge.key.tmp" && chmod 400 "$DIR/munge/munge.key.tmp"
    mv "$DIR/munge/munge.key.tmp" "$DIR/munge/munge.key"
  fi
  [ -s "$DIR/etc/slurm.conf" ] && return 0
  sdir="$(socket_dir)"; chmod 755 "$sdir"
  echo "$sdir/munge.socket" > "$DIR/munge/socket_path"
  local ports; mapfile -t ports < <(free_ports 4)  # slurmctld, slurmd, slurmdbd, MariaDB
  write_dbd_config "$sdir/munge.socket" "${ports[2]}" "${ports[3]}"
  # "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105": the machine as slurmd sees it
  node="$(slurmd -C | head -n 1)"
  cat > "$DIR/etc/slurm.conf.tmp" <<EOF
# A single-node cluster written by scripts/slurm_cluster.sh; everything it keeps is under $DIR.
ClusterName=objcrop
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sdir/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups in a container: processes tracked by their parent pids, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=${ports[2]}
# for connections to slurmdbd the munge socket is given here (slurm.conf(5), AccountingStoragePass)
AccountingStoragePass=$sdir/munge.socket
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
DependencyParameters=kill_invalid_depend
ReturnToService=2
KillWait=10
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$DIR/etc/slurm.conf.tmp" "$DIR/etc/slurm.conf"
}

# slurmdbd finds its config next to $SLURM_CONF; it must be readable by SlurmUser only.
write_dbd_config() {
  cat > "$DIR/etc/slurmdbd.conf.tmp" <<EOF
AuthType=auth/munge
AuthInfo=socket=$1
DbdHost=localhost
DbdPort=$2
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$3
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf.tmp"
  mv "$DIR/etc/slurmdbd.conf.tmp" "$DIR/etc/slurmdbd.conf"
}

# Wait up to $1 seconds for a command to succeed.
wait_for() {
  local n="$1"; shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}

# MariaDB for slurmdbd: its own data folder, TCP on 127.0.0.1 only, root without password.
start_database() {
  local port; port="$(sed -n 's/^StoragePort=//p' "$DIR/etc/slurmdbd.conf")"
  if [ ! -d "$DIR/db/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root --auth-root-authentication-method=normal \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
  fi
  if ! daemon_pid mariadbd >/dev/null; then
    setsid mariadbd --no-defaults --datadir="$DIR/db" --socket="$DIR/run/mariadb.sock" --port="$port" \
      --bind-address=127.0.0.1 --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadb.log" --user=root \
      --skip-log-bin --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  fi
  wait_for 60 mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root -e "select 1" \
    || die "MariaDB did not answer in 60 s; see $DIR/log/mariadb.log"
}

start_accounting() {
  start_database
  daemon_pid slurmdbd >/dev/null || client slurmdbd || die "slurmdbd did not start; see $DIR/log/slurmdbd.log"
  wait_for 30 client sacctmgr -n list cluster || die "slurmdbd did not answer in 30 s; see $DIR/log/slurmdbd.log"
  if [ -z "$(client sacctmgr -n -P list cluster format=cluster)" ]; then
    client sacctmgr -i -Q add cluster objcrop >/dev/null
  fi
}

# Every client command of this cluster (srun, sbatch, squeue, ...) reads SLURM_CONF.
client() { SLURM_CONF="$DIR/etc/slurm.conf" "$@"; }

start() {
  local sock
  [ "$(id -u)" = 0 ] || die "start needs root: slurmd runs jobs as their users and munged/slurmctld run as root here."
  mkdir -p "$DIR"; DIR="$(cd "$DIR" && pwd)"
  ensure_packages
  write_config
  sock="$(cat "$DIR/munge/socket_path")"
  mkdir -p "$(dirname "$sock")"; chmod 755 "$(dirname "$sock")"
  if ! daemon_pid munged >/dev/null; then
    munged --force --num-threads=10 --key-file="$DIR/munge/munge.key" --socket="$sock" --pid-file="$DIR/run/munged.pid" \
      --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
      || die "munged did not start; see $DIR/log/munged.log"
  fi
  start_accounting
  # a restart recovers the state of the last run (stop cancelled its jobs): job ids go on, and the
  # accounting database never sees one id twice
  daemon_pid slurmctld >/dev/null || slurmctld -f "$DIR/etc/slurm.conf" \
    || die "slurmctld did not start; see $DIR/log/slurmctld.log"
  daemon_pid slurmd >/dev/null || slurmd -f "$DIR/etc/slurm.conf" \
    || die "slurmd did not start; see $DIR/log/slurmd.log"
  for _ in $(seq 1 60); do
    if out="$(client timeout 10 srun --quiet --time=1 hostname 2>/dev/null)" && [ -n "$out" ]; then
      echo "slurm_cluster: running in $DIR (srun hostname: $out)"
      echo "export SLURM_CONF=$DIR/etc/slurm.conf"
      return 0
    fi
    sleep 1
  done
  die "the cluster in $DIR started but 'srun hostname' did not answer in 60 s; logs: $DIR/log/"
}

# The processes of this cluster's jobs: this SLURM_CONF in their environment, and SLURM_JOB_ID (the
# job's own processes) or the name slurmstepd (their keeper); a shell that merely exported SLURM_CONF
# is neither.
job_processes() {
  local env pid
  for env in /proc/[0-9]*/environ; do
    pid="${env#/proc/}"; pid="${pid%/environ}"
    tr '\0' '\n' 2>/dev/null < "$env" | grep -qx "SLURM_CONF=$DIR/etc/slurm.conf" || continue
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ] \
       || tr '\0' '\n' 2>/dev/null < "$env" | grep -q "^SLURM_JOB_ID="; then echo "$pid"; fi
  done
}

# TERM to each daemon named (if running), wait up to 10 s, then KILL.
stop_daemons() {
  local name pid pids=() names=()
  for name in "$@"; do
    pid="$(daemon_pid "$name")" || continue
    kill -TERM "$pid"; pids+=("$pid"); names+=("$name")
  done
  for i in "${!pids[@]}"; do
    for _ in $(seq 1 100); do [ -d "/proc/${pids[$i]}" ] || break; sleep 0.1; done
    if [ -d "/proc/${pids[$i]}" ]; then kill -KILL "${pids[$i]}"; fi
    echo "slurm_cluster: stopped ${names[$i]} (${pids[$i]})"
  done
}

stop() {
  local group jobs sock
  [ -d "$DIR" ] || { echo "slurm_cluster: no cluster in $DIR"; return 0; }
  DIR="$(cd "$DIR" && pwd)"
  if daemon_pid slurmctld >/dev/null; then
    # the jobs first: their processes (slurmstepd) would outlive slurmd
    jobs="$(client squeue -h -o %i 2>/dev/null || true)"
    # shellcheck disable=SC2086  # one argument per job id
    [ -z "$jobs" ] || client scancel --full $jobs 2>/dev/null || true
    for _ in $(seq 1 30); do
      jobs="$(client squeue -h -o %i 2>/dev/null || true)"
      [ -z "$jobs" ] && break
      sleep 1
    done
    [ -z "$jobs" ] || echo "slurm_cluster: jobs still listed after 30 s: $jobs" >&2
  fi
  for group in "${STOP_GROUPS[@]}"; do stop_daemons $group; done
  # a job whose slurmstepd died with it (or slurmd gone first) would run on: its processes go too
  local left; left="$(job_processes)"
  if [ -n "$left" ]; then
    echo "slurm_cluster: killing job processes left behind: $(echo $left)" >&2
    # shellcheck disable=SC2086  # one argument per pid
    kill -KILL $left 2>/dev/null || true
  fi
  if [ -s "$DIR/munge/socket_path" ]; then
    sock="$(cat "$DIR/munge/socket_path")"
    # a socket folder under /tmp is made again at the same path by the next start
    case "$sock" in /tmp/objcrop-munge.*) rm -rf "$(dirname "$sock")" ;; esac
  fi
  return 0
}

status() {
  local name pid up=0
  [ -d "$DIR" ] || { echo "slurm_cluster: no cluster in $DIR"; return 3; }
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    if pid="$(daemon_pid "$name")"; then echo "$name: running ($pid)"; up=$((up + 1)); else echo "$name: not running"; fi
  done
  [ "$up" = 5 ] && client sinfo
  [ "$up" = 5 ] && return 0
  [ "$up" = 0 ] && return 3
  return 1
}

INSTALL=0
args=()
for a in "$@"; do
  case "$a" in
    --install) INSTALL=1 ;;
    -h|--help) usage; exit 0 ;;
    *) args+=("$a") ;;
  esac
done
if [ "${args[0]:-}" = install ] && [ ${#args[@]} = 1 ]; then
  [ "$(id -u)" = 0 ] || die "install needs root (apt-get)."
  INSTALL=1; ensure_packages; exit 0
fi
[ ${#args[@]} = 2 ] || { usage >&2; exit 2; }
DIR="${args[1]}"
case "${args[0]}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage >&2; exit 2 ;;
esac
