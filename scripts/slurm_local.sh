#!/usr/bin/env bash
# A single-node SLURM cluster on loopback, for the tests and for trying launcher=slurm on one machine.
#
#   bash scripts/slurm_local.sh up      install (Debian, root) if needed, start munged, slurmctld, slurmd
#   bash scripts/slurm_local.sh down    stop them by process id and wait until they are gone
#   bash scripts/slurm_local.sh env     print the export line for SLURM_CONF
#
# Everything (config, state, spool, logs, pid files) lives in $AUTOFIX_SLURM_DIR (default
# /tmp/autofix-slurm). Every process that talks to the cluster needs SLURM_CONF=$AUTOFIX_SLURM_DIR/slurm.conf.
# No systemd on CI machines, so the daemons are started by hand. No slurmdbd: sacct does not work, and
# autofix reads job states from squeue/scontrol instead (see autofix/remediate/launchers.py).
set -euo pipefail
DIR="${AUTOFIX_SLURM_DIR:-/tmp/autofix-slurm}"
CONF="$DIR/slurm.conf"

say() { echo "slurm_local: $*" >&2; }

install_packages() {
    command -v slurmctld >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null && return
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "slurmctld/slurmd/munge are missing and this is not a Debian machine run as root: install them yourself"
        exit 1
    fi
    say "installing slurmctld slurmd slurm-client munge (Debian packages)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    mkdir -p "$DIR"/{state,spool,log}
    local mem cpus
    cpus=$(nproc)
    # leave 2 GiB (or a quarter, on small machines) to the system and the orchestrator
    mem=$(free -m | awk '/^Mem:/ {m=$2; h=(m/4 < 2048 ? int(m/4) : 2048); print m - h}')
    cat >"$CONF" <<EOF
ClusterName=autofix
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# short waits so that tests of cancel and requeue do not sit idle
KillWait=5
MinJobAge=600
SchedulerParameters=defer_batch=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1024
EOF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    install_packages
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
        say "already up ($CONF)"
        return
    fi
    write_conf
    export SLURM_CONF="$CONF"
    if ! pgrep -x munged >/dev/null; then
        install -d -o munge -g munge /run/munge
        runuser -u munge -- /usr/sbin/munged
    fi
    # -c: start from a clean state; jobs an interrupted earlier session left queued must not run again
    /usr/sbin/slurmctld -c
    /usr/sbin/slurmd -N localhost
    for _ in $(seq 1 100); do
        if sinfo -h -o %T 2>/dev/null | grep -q idle; then
            say "up: $(sinfo -h -o '%P %D %c CPUs %m MB %T' | head -1); export SLURM_CONF=$CONF"
            return
        fi
        sleep 0.2
    done
    say "the node did not become idle within 20 s; see $DIR/log/"
    tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    exit 1
}

stop_pid() {
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || return 0
    # slurmctld takes a few seconds to save its state and exit after SIGTERM
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    if [ -f "$CONF" ] && alive "$DIR/slurmctld.pid"; then
        SLURM_CONF="$CONF" scancel --full --user root 2>/dev/null || true
    fi
    stop_pid "$DIR/slurmd.pid"
    stop_pid "$DIR/slurmctld.pid"
    # the tests start munged only for the cluster; leave one that was running before alone
    say "down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
