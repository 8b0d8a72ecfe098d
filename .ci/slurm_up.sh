#!/usr/bin/env bash
# Bring up a single-node SLURM from Debian's packages for the cluster tests:
# munged, slurmctld and slurmd, one node with $AFFECTUBE_SLURM_CPUS CPUs and
# a fake `gpu` GRES backed by /dev/null (no CUDA: jobs see CUDA_VISIBLE_DEVICES only).
#
#   .ci/slurm_up.sh                 install if needed, write the config, start the daemons
#   .ci/slurm_up.sh --install-only  only the apt-get step (what .ci/run calls before pytest)
#
# Every daemon this script starts has its pid written to $AFFECTUBE_SLURM_STATE/<name>.pid;
# .ci/slurm_down.sh stops exactly those pids. Daemons that were already running are
# left alone (and not recorded). Needs root. Exit codes: 0 up, 3 refused (not root,
# no apt, or a foreign /etc/slurm/slurm.conf), 1 anything else.
set -euo pipefail

STATE=${AFFECTUBE_SLURM_STATE:-/tmp/affectube-slurm}
CPUS=${AFFECTUBE_SLURM_CPUS:-2}
GPUS=${AFFECTUBE_SLURM_GPUS:-2}
PARTITION=${AFFECTUBE_SLURM_PARTITION:-debug}
PACKAGES="slurmctld slurmd slurm-client munge"
CONF=/etc/slurm/slurm.conf
MARKER="# written by affectube .ci/slurm_up.sh"

say() { echo "slurm_up: $*" >&2; }
refuse() { say "$*"; exit 3; }

[ "$(id -u)" = 0 ] || refuse "needs root (installs packages, starts munged/slurmctld/slurmd)"

install_packages() {
    local missing=""
    for bin in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do
        [ -x "$bin" ] || missing=yes
    done
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || refuse "SLURM is not installed and apt-get is not available"
    say "installing $PACKAGES"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
    fi
}

install_packages
[ "${1:-}" = "--install-only" ] && exit 0

# Serialise concurrent bring-ups (two pytest sessions) on one lock.
mkdir -p "$STATE"
exec 9>"$STATE/lock"
flock -w 120 9 || { say "timed out waiting for $STATE/lock"; exit 1; }

HOST=$(hostname -s)
MEM_KB=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
MEM_MB=${AFFECTUBE_SLURM_MEM_MB:-$((MEM_KB / 1024 * 9 / 10))}

if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    refuse "$CONF exists and was not written by affectube; refusing to overwrite a real SLURM configuration"
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown munge:munge /run/munge

cat >"$CONF" <<EOF
$MARKER -- a throw-away single-node cluster for tests
ClusterName=affectube
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# no slurmdbd: Snakemake polls squeue, so finished jobs must stay visible long enough
MinJobAge=600
KillWait=30
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
# Fake GPUs: SLURM wants one distinct device file per GPU; nothing opens them (task/none,
# no cgroups), so the first is /dev/null and the others are nodes with /dev/null's numbers.
GRES_FILES=/dev/null
for i in $(seq 1 $((GPUS - 1))); do
    dev="$STATE/fakegpu$i"
    [ -c "$dev" ] || mknod "$dev" c 1 3 2>/dev/null || : >"$dev"
    GRES_FILES="$GRES_FILES,$dev"
done
echo "NodeName=$HOST Name=gpu File=$GRES_FILES Count=$GPUS" >/etc/slurm/gres.conf

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -s "$1" ] && cat "$1" || true; }

start_daemon() {  # name pidfile command...
    local name=$1 pidfile=$2
    shift 2
    if alive "$(pid_of "$pidfile")"; then
        say "$name already running (pid $(pid_of "$pidfile")), leaving it alone"
        return 0
    fi
    rm -f "$pidfile"
    "$@"
    for _ in $(seq 100); do
        alive "$(pid_of "$pidfile")" && break
        sleep 0.1
    done
    alive "$(pid_of "$pidfile")" || { say "$name did not start (see /var/log/slurm or syslog)"; exit 1; }
    cp "$pidfile" "$STATE/$name.pid"
    say "started $name (pid $(cat "$STATE/$name.pid"))"
}

start_daemon munged /run/munge/munged.pid runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null || { say "munge does not work"; exit 1; }
# -c: start with no saved jobs (a previous test run may have left some)
start_daemon slurmctld /run/slurmctld.pid /usr/sbin/slurmctld -c
start_daemon slurmd /run/slurmd.pid /usr/sbin/slurmd

# Wait for the node to be schedulable.
for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle*|mixed*|allocated*) break ;;
        down*|drain*|inval*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case "$state" in
    idle*|mixed*|allocated*) ;;
    *) say "node $HOST is '$state', not idle after 60 s"; sinfo -N -l >&2 || true; exit 1 ;;
esac
say "up: node $HOST ($CPUS CPUs, ${MEM_MB} MB, gpu:$GPUS), partition $PARTITION"
