#!/usr/bin/env bash
# A real one-node SLURM on this machine, for tests and CI (Debian 12, run as root).
#
#   bash scripts/slurm-localhost.sh          # install if missing, configure, start, wait idle
#   bash scripts/slurm-localhost.sh --stop   # stop slurmd, slurmctld (munged stays)
#
# Idempotent: packages are installed only when missing; the daemons are (re)started only when
# they are not running or the generated configuration changed. The node is `localhost` with
# this machine's CPUs and memory (from `slurmd -C`) and one placeholder GPU (`Gres=gpu:1`,
# File=/dev/null) so GPU asks schedule and show in `scontrol show job`. No accounting database
# (Debian's sacct then has nothing to read; use `--slurm-status-command squeue`), no cgroups,
# no systemd: munged, slurmctld and slurmd are started directly. Logs: /var/log/slurm/.
# Environment: SR7T_SLURM_WAIT (seconds to wait for the node, default 60).
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
WAIT_S=${SR7T_SLURM_WAIT:-60}

say() { echo "slurm-localhost: $*"; }
die() {
    echo "slurm-localhost: ERROR: $*" >&2
    exit 1
}

pid_alive() { # pidfile name: true when the pid in the file runs a process called name
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$2" ]]
}

stop_daemon() { # pidfile name
    local pid i
    pid_alive "$1" "$2" || return 0
    pid=$(<"$1")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        pid_alive "$1" "$2" || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

if [[ ${1:-} == --stop ]]; then
    stop_daemon /run/slurmd.pid slurmd
    stop_daemon /run/slurmctld.pid slurmctld
    say "stopped slurmd and slurmctld"
    exit 0
fi

# ---- 0. already up and idle? (works without root)
node_state() { sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -n1 || true; }
if pid_alive /run/slurmctld.pid slurmctld && pid_alive /run/slurmd.pid slurmd; then
    up_already=1
else
    up_already=0
fi

if [[ $(id -u) -ne 0 ]]; then
    state=$(node_state)
    if [[ $up_already -eq 1 && $state =~ ^(idle|mixed|allocated) ]]; then
        say "SLURM already running (node localhost: $state)"
        exit 0
    fi
    die "must run as root to install and start SLURM (node state: '${state:-none}')"
fi

# ---- 1. packages
missing=()
for b in munged slurmctld slurmd sbatch; do
    command -v "$b" >/dev/null || missing+=("$b")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get (Debian 12 needed)"
    say "${missing[*]} missing: installing slurm-wlm munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$(mktemp)
    # no daemon starts from the packages' scripts (no systemd; this script starts them)
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$apt_log" 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        apt-get update -q >>"$apt_log" 2>&1 || true
        apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$apt_log" 2>&1 || {
            tail -n 20 "$apt_log" >&2
            die "apt-get install slurm-wlm munge failed (log above: $apt_log)"
        }
    fi
    rm -f "$apt_log"
    if [[ $(trap -p EXIT) == *policy-rc.d* ]]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
fi
for b in munged munge slurmctld slurmd sinfo sbatch scontrol; do
    command -v "$b" >/dev/null || die "$b not found after installing slurm-wlm and munge"
done

# ---- 2. munge: key and daemon
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --force ||
        die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 25); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n | unmunge >/dev/null || die "munge credentials do not round-trip (munge -n | unmunge)"
fi

# ---- 3. slurm.conf + gres.conf for one node called localhost
hw=$(slurmd -C | head -n1) || die "slurmd -C failed (cannot read this machine's hardware)"
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
cpus=$(field CPUs)
boards=$(field Boards)
sockets=$(field SocketsPerBoard)
cores=$(field CoresPerSocket)
threads=$(field ThreadsPerCore)
mem=$(field RealMemory)
[[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C': $hw"
# leave a little memory headroom so the node is never drained for "Low RealMemory"
mem=$((mem * 95 / 100))

install -d "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by scripts/slurm-localhost.sh: one node (this machine), no accounting, no cgroups.
ClusterName=sr7t
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue/scontrol (the status source without sacct)
MinJobAge=300
# time limits enforced promptly: killed at the limit, SIGKILL 5 s after SIGTERM
OverTimeLimit=0
KillWait=5
InactiveLimit=0
MailProg=/bin/true
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=7-00:00:00 State=UP
EOF
new_gres=$(mktemp)
# SLURM 22.05's gres/gpu plugin drops a GPU without File= ("Removing file-less GPU") and
# then drains the node (count reported 0 < 1); /dev/null stands in for the device file.
# With TaskPlugin=task/none nothing constrains devices; a GPU job gets CUDA_VISIBLE_DEVICES=0.
echo "NodeName=localhost Name=gpu File=/dev/null Count=1" >"$new_gres"

changed=0
cmp -s "$new_conf" "$CONF_DIR/slurm.conf" || changed=1
cmp -s "$new_gres" "$CONF_DIR/gres.conf" || changed=1
if ((changed)); then
    say "writing $CONF_DIR/slurm.conf (localhost: CPUs=$cpus RealMemory=$mem Gres=gpu:1)"
    install -m 0644 "$new_conf" "$CONF_DIR/slurm.conf"
    install -m 0644 "$new_gres" "$CONF_DIR/gres.conf"
fi
rm -f "$new_conf" "$new_gres"

# ---- 4. daemons (no systemd): restart only when down or the config changed
if ((changed)) || ((up_already == 0)); then
    stop_daemon /run/slurmd.pid slurmd
    stop_daemon /run/slurmctld.pid slurmctld
    say "starting slurmctld and slurmd"
    # -c: clear saved state (jobs, node states) from earlier configurations
    slurmctld -c || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
    for _ in $(seq 50); do
        scontrol ping 2>/dev/null | grep -q UP && break
        sleep 0.2
    done
    scontrol ping 2>/dev/null | grep -q UP || {
        tail -n 20 "$LOG_DIR/slurmctld.log" >&2 || true
        die "slurmctld does not answer (scontrol ping); log: $LOG_DIR/slurmctld.log"
    }
    slurmd -N localhost || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
fi

# ---- 5. wait until the node is idle
state=""
for _ in $(seq $((WAIT_S * 2))); do
    state=$(node_state)
    [[ $state =~ ^(idle|mixed|allocated) ]] && break
    if [[ $state =~ ^(drain|down) ]]; then
        # e.g. left drained by an earlier configuration: bring it back
        scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.5
done
if ! [[ $state =~ ^(idle|mixed|allocated) ]]; then
    sinfo -N -l >&2 || true
    scontrol show node localhost >&2 || true
    tail -n 20 "$LOG_DIR/slurmd.log" >&2 || true
    die "node localhost is '${state:-unknown}', not idle, after ${WAIT_S}s (logs in $LOG_DIR)"
fi
say "ready: node localhost is $state ($(sinfo -h -o '%P %c CPUs %m MB %G' | head -n1))"
