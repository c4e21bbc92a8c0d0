#!/usr/bin/env bash
# A single-node Slurm on this machine, for trying `factcircuits sweep --executor slurm` and for
# the Slurm tests. Uses Debian's packages (apt-get install slurmctld slurmd munge slurm-client)
# and keeps everything (config, munge key and socket, state, logs) in one folder it owns, so
# nothing under /etc is touched.
#
#   scripts/slurm_local.sh start    # write the config, start munged, slurmctld, slurmd; wait for idle
#   scripts/slurm_local.sh status   # "running" (exit 0) or "stopped" (exit 1)
#   scripts/slurm_local.sh stop     # stop the daemons it started
#   scripts/slurm_local.sh env      # print `export SLURM_CONF=...` (eval it in your shell)
#
# Clients (sbatch, squeue, submitit) find this cluster through SLURM_CONF, printed by `start`.
# The daemons need root: run as root, or the script uses sudo for them.
# FACTCIRCUITS_SLURM_DIR picks the folder (default /tmp/factcircuits-slurm-<uid>).
set -euo pipefail

SLURM_DIR="${FACTCIRCUITS_SLURM_DIR:-/tmp/factcircuits-slurm-$(id -u)}"
CONF="$SLURM_DIR/slurm.conf"
MUNGE_SOCKET="$SLURM_DIR/munge/munge.socket.2"
NODE=localhost
WAIT_SECONDS="${FACTCIRCUITS_SLURM_WAIT:-60}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_commands() {
    local missing=()
    for cmd in munged mungekey slurmctld slurmd sinfo sbatch scontrol; do
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "slurm_local: missing ${missing[*]}; install them with" \
             "'apt-get install slurmctld slurmd slurm-client munge'" >&2
        exit 2
    fi
}

sbin() {  # daemons live in /usr/sbin, which is not always on a user's PATH
    command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"
}

pid_alive() {  # pid_alive FILE: the process named in FILE is running
    [ -s "$1" ] && as_root kill -0 "$(as_root cat "$1")" 2>/dev/null
}

node_state() {  # idle, mixed, down, ...; empty when Slurm does not answer
    # Without its file, sinfo would retry for a minute before giving up.
    [ -f "$CONF" ] || return 0
    { SLURM_CONF="$CONF" sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null || true; } \
        | head -n 1
}

write_config() {
    local cpus mem_mb
    cpus="$(nproc)"
    # Leave a tenth of the memory (at least 1 GiB) to the system and the daemons.
    mem_mb="$(awk '/^MemTotal:/ {m = int($2 / 1024); r = int(m / 10); if (r < 1024) r = 1024;
                                  print m - r}' /proc/meminfo)"
    mkdir -p "$SLURM_DIR"/{state,spool,log}
    cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on localhost.
ClusterName=factcircuits-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmctldPort=${FACTCIRCUITS_SLURMCTLD_PORT:-6817}
SlurmdPort=${FACTCIRCUITS_SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
# No cgroups (containers often lack them); memory limits are enforced by polling.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
# No slurmdbd: finished jobs are kept in memory (MinJobAge) and in a completion log.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.log
MinJobAge=3600
MaxJobCount=100000
MpiDefault=none
ReturnToService=2
KillWait=5
OverTimeLimit=0
InactiveLimit=0
SlurmdTimeout=60
DefMemPerCPU=$((mem_mb / cpus))
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=$NODE MaxTime=00:05:00 State=UP
EOF
    # The submitting user needs to read the config; the key stays private.
    chmod 644 "$CONF"
}

start_munge() {
    local munge_dir="$SLURM_DIR/munge"
    if pid_alive "$munge_dir/munged.pid"; then return; fi
    mkdir -p "$munge_dir"
    chmod 755 "$SLURM_DIR" "$munge_dir"
    if [ ! -s "$munge_dir/munge.key" ]; then
        as_root "$(sbin mungekey)" --create --keyfile="$munge_dir/munge.key" 2>/dev/null \
            || dd if=/dev/urandom of="$munge_dir/munge.key" bs=1024 count=1 status=none
        as_root chmod 600 "$munge_dir/munge.key"
    fi
    as_root "$(sbin munged)" --force \
        --key-file="$munge_dir/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$munge_dir/munged.pid" --log-file="$SLURM_DIR/log/munged.log" \
        --seed-file="$munge_dir/munged.seed"
}

start() {
    need_commands
    if pid_alive "$SLURM_DIR/slurmctld.pid" && [ -n "$(node_state)" ]; then
        echo "slurm_local: already running ($CONF)"
        print_env
        return
    fi
    write_config
    start_munge
    pid_alive "$SLURM_DIR/slurmctld.pid" || as_root "$(sbin slurmctld)" -f "$CONF"
    pid_alive "$SLURM_DIR/slurmd.pid" || as_root "$(sbin slurmd)" -f "$CONF" -N "$NODE"
    local waited=0 state=""
    while [ "$waited" -lt "$WAIT_SECONDS" ]; do
        state="$(node_state)"
        case "$state" in
            idle|mixed|allocated) break ;;
            down*|drain*) SLURM_CONF="$CONF" scontrol update nodename="$NODE" state=resume \
                              >/dev/null 2>&1 || true ;;
        esac
        sleep 1
        waited=$((waited + 1))
    done
    case "$state" in
        idle|mixed|allocated) ;;
        *)
            echo "slurm_local: node '$NODE' is '${state:-unreachable}' after ${WAIT_SECONDS}s;" \
                 "see $SLURM_DIR/log/" >&2
            exit 1 ;;
    esac
    echo "slurm_local: node $NODE $state ($CONF)"
    print_env
}

stop_pidfile() {  # stop_pidfile FILE: TERM the process, wait for it to exit
    local pidfile="$1" pid
    pid_alive "$pidfile" || return 0
    pid="$(as_root cat "$pidfile")"
    as_root kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        as_root kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    as_root kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    # Jobs still running would be orphaned: cancel them first.
    if [ -f "$CONF" ] && pid_alive "$SLURM_DIR/slurmctld.pid"; then
        SLURM_CONF="$CONF" scancel --full --state=RUNNING,PENDING --user="$(id -un)" \
            >/dev/null 2>&1 || true
    fi
    stop_pidfile "$SLURM_DIR/slurmd.pid"
    stop_pidfile "$SLURM_DIR/slurmctld.pid"
    stop_pidfile "$SLURM_DIR/munge/munged.pid"
    echo "slurm_local: stopped"
}

status() {
    local state=""
    pid_alive "$SLURM_DIR/slurmctld.pid" && state="$(node_state)"
    if [ -n "$state" ]; then
        echo "running: node $NODE $state ($CONF)"
    else
        echo "stopped"
        return 1
    fi
}

print_env() {
    echo "export SLURM_CONF=$CONF"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) print_env ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
