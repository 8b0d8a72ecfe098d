#!/usr/bin/env bash
# Stop the daemons .ci/slurm_up.sh started, by the pids it recorded (never by name):
# slurmd, then slurmctld, then munged. Daemons it did not start are left running.
set -uo pipefail

STATE=${AFFECTUBE_SLURM_STATE:-/tmp/affectube-slurm}
say() { echo "slurm_down: $*" >&2; }

stop() {  # name
    local file="$STATE/$1.pid" pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$1 (pid $pid) ignored SIGTERM for 10 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        say "stopped $1 (pid $pid)"
    fi
    rm -f "$file"
}

# The cluster is ours (we started its controller): cancel what still runs on it,
# so that no slurmstepd outlives slurmd.
if [ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs $jobs"
        scancel $jobs 2>/dev/null
        for _ in $(seq 60); do
            [ -z "$(squeue -h -t R,CG,PD -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

stop slurmd
stop slurmctld
stop munged
exit 0
