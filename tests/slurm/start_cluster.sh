#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine for the stool tests (and for trying `python -m lingua.stool`):
# installs Debian's slurm-wlm and munge when missing, writes a minimal cgroup-free slurm.conf (no accounting), starts
# munged, slurmctld and slurmd as root on localhost and waits until the node is idle. Running it again while
# everything is up does nothing. Needs root.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARKER="# written by tests/slurm/start_cluster.sh"
NODE=$(hostname -s)

if [ "$(id -u)" != 0 ]; then
    echo "start_cluster.sh: must run as root (it installs packages and starts the SLURM daemons)" >&2
    exit 1
fi

# pytest-xdist workers may call this at the same time; one of them does the work
mkdir -p /run/lock
exec 9>/run/lock/lingua-slurm-cluster.lock
flock 9

munge_up() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
controller_up() { scontrol ping 2>/dev/null | grep -q "is UP"; }
node_state() { sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | head -n 1; }
node_ready() { [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing) ]]; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
fi

# slurm.conf: only ever replace a file this script wrote, never an administrator's
if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    echo "start_cluster.sh: $CONF exists and was not written by this script; leaving it alone" >&2
else
    mkdir -p /etc/slurm
    # the node line as slurmd itself sees this machine (CPUs, sockets, cores, threads, RealMemory)
    node_line=$(slurmd -C | head -n 1)
    cat >"$CONF.partial" <<EOF
$MARKER
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups: processes are tracked through /proc and tasks are not bound to cores
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
# cores are allocated, memory is only checked against the node's size
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=10
# a requeued job may start again cred_expire + 1 s after the requeue (default 120 s: too slow for the preemption test)
AuthInfo=cred_expire=10
# look at pending jobs every second or two (a requeued job restarts soon after it becomes eligible)
SchedulerParameters=sched_interval=2,bf_interval=1
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
# test jobs are tiny: several may share a core, so concurrent tests do not queue behind each other
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    if cmp -s "$CONF.partial" "$CONF"; then
        rm "$CONF.partial"
    else
        mv "$CONF.partial" "$CONF"
        # some settings (AuthInfo) are read only at start: restart the daemons on the new file
        if controller_up; then
            scontrol shutdown
            for _ in $(seq 150); do
                controller_up || pgrep -x slurmd >/dev/null || break
                sleep 0.2
            done
        fi
    fi
fi

if munge_up && controller_up && node_ready; then
    echo "SLURM is already up: node $NODE is $(node_state)"
    exit 0
fi

mkdir -p /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
# the daemons must not inherit the lock (fd 9), or the next run would wait for it forever
munge_up || runuser -u munge -- munged 9>&-
controller_up || slurmctld 9>&-
pgrep -x slurmd >/dev/null || slurmd 9>&-

for _ in $(seq 120); do
    state=$(node_state || true)
    if node_ready; then
        echo "SLURM is up: node $NODE is $state (partition debug)"
        exit 0
    fi
    if [[ "$state" =~ ^(down|drain|drained|draining) ]]; then
        scontrol update NodeName="$NODE" State=RESUME || true
    fi
    sleep 0.5
done
echo "start_cluster.sh: node $NODE did not become idle within 60 s (state: ${state:-unknown});" \
    "see /var/log/slurm/slurmctld.log and /var/log/slurm/slurmd.log" >&2
exit 1
