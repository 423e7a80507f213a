#!/usr/bin/env bash
# Install and start a one-node SLURM on this Debian/Ubuntu machine (as root), for tests and trials.
#
#   sudo bash deploy/slurm/local-slurm.sh           # install if needed, configure, start; ~15 s
#   sudo bash deploy/slurm/local-slurm.sh --stop    # stop the daemons this script started
#
# What it does: `apt-get install slurm-wlm munge` (when the daemons are missing), a munge key,
# a minimal /etc/slurm/slurm.conf for this host (its short name, the CPUs and memory that
# `slurmd -C` reports, one partition "debug"), then munged, slurmctld and slurmd; it waits
# until the node is idle. No systemd or cgroups are needed (processes are tracked by
# /proc, tasks are not confined), so it also works in containers.
#
# Idempotent: when `sinfo` already answers with this node idle or busy it only says so.
# It never overwrites a slurm.conf it did not write (those carry the marker line below).
# It exits non-zero with one line saying why when it cannot (not root, no apt-get,
# a foreign slurm.conf, a daemon that does not come up: see /var/log/slurm/).
set -euo pipefail

MARK="# written by scalenc deploy/slurm/local-slurm.sh"
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
PARTITION=${SCALENC_SLURM_PARTITION:-debug}

die() { echo "local-slurm.sh: $*" >&2; exit 1; }
say() { echo "local-slurm.sh: $*"; }

HOST=$(hostname -s 2>/dev/null || hostname)

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1 | tr -d '*~#!%$@^-' || true; }

if [ "${1:-}" = "--stop" ]; then
    [ "$(id -u)" = 0 ] || die "must run as root to stop the daemons"
    for d in slurmd slurmctld munged; do
        for pid in $(pgrep -x "$d" || true); do kill "$pid" 2>/dev/null || true; done
    done
    for _ in $(seq 100); do pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x munged >/dev/null || break; sleep 0.1; done
    say "stopped slurmd, slurmctld, munged"
    exit 0
fi

if command -v sinfo >/dev/null 2>&1; then
    case "$(node_state)" in
        idle|mixed|allocated|alloc|mix|completing)
            say "SLURM already running on $HOST ($(node_state))"; exit 0 ;;
    esac
fi

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons); try: sudo bash $0"

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
        || ! command -v munged >/dev/null 2>&1 || ! command -v sinfo >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "slurmctld/slurmd/munged are not installed and there is no apt-get to install them"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # package scripts must not try to start services (no init system in containers)
    POLICY=/usr/sbin/policy-rc.d
    ADDED_POLICY=0
    if [ ! -e "$POLICY" ]; then printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod +x "$POLICY"; ADDED_POLICY=1; fi
    trap '[ "$ADDED_POLICY" = 1 ] && rm -f "$POLICY"' EXIT
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
    [ "$ADDED_POLICY" = 1 ] && rm -f "$POLICY"
    ADDED_POLICY=0
fi

# ---- munge ------------------------------------------------------------------------------
MUNGE_USER=root
id munge >/dev/null 2>&1 && MUNGE_USER=munge
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key --force
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
chown -R "$MUNGE_USER": /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    rm -f /run/munge/munged.socket.2 /run/munge/munged.socket.2.lock
    if [ "$MUNGE_USER" = root ]; then munged --force; else runuser -u munge -- munged; fi
fi
for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munged does not answer (see /var/log/munge/munged.log)"

# ---- slurm.conf ---------------------------------------------------------------------------
mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not overwriting it (move it away to use this script)"
fi
SLURM_USER=root
id slurm >/dev/null 2>&1 && SLURM_USER=slurm
chown -R "$SLURM_USER": "$STATE_DIR/slurmctld" "$LOG_DIR"

# this node as slurmd sees it (CPUs, sockets, memory); memory slightly under the total so
# that the node is not drained for having "less memory than configured"
NODE_LINE=$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -n1 || true)
if [ -z "$NODE_LINE" ]; then
    MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
    NODE_LINE="NodeName=$HOST CPUs=$(nproc) RealMemory=$MEM_MB"
fi
MEM_MB=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM_MB=$(( ${MEM_MB:-1024} * 95 / 100 ))
NODE_LINE=$(sed -e "s/^NodeName=[^ ]*/NodeName=$HOST/" -e "s/RealMemory=[0-9]*/RealMemory=$MEM_MB/" \
    -e 's/ UpTime=.*//' <<<"$NODE_LINE")

NEW=$(mktemp)
cat > "$NEW" <<EOF
$MARK
# A one-node cluster: controller and compute node on $HOST.
ClusterName=scalenc-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=$SLURM_USER
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=10
MinJobAge=60
SlurmctldTimeout=60
SlurmdTimeout=60
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
if [ -e "$CONF" ] && cmp -s "$NEW" "$CONF"; then rm -f "$NEW"; CHANGED=0; else mv "$NEW" "$CONF"; chmod 0644 "$CONF"; CHANGED=1; fi

# ---- daemons ------------------------------------------------------------------------------
if [ "$CHANGED" = 1 ]; then  # a new configuration: restart what runs
    for d in slurmd slurmctld; do
        for pid in $(pgrep -x "$d" || true); do kill "$pid" 2>/dev/null || true; done
    done
    for _ in $(seq 50); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.1; done
fi
pgrep -x slurmctld >/dev/null || slurmctld || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld does not answer (see $LOG_DIR/slurmctld.log)"
pgrep -x slurmd >/dev/null || slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"

state=""
for _ in $(seq 150); do
    state=$(node_state)
    case "$state" in
        idle|mixed|allocated|alloc|mix) break ;;
        down|drain|drained|draining|fail) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
done
case "$state" in
    idle|mixed|allocated|alloc|mix) ;;
    *) die "node $HOST is '${state:-unknown}' after 30 s (see $LOG_DIR/slurmd.log and $LOG_DIR/slurmctld.log)" ;;
esac
say "SLURM up: node $HOST ($state), partition $PARTITION, $(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE") CPUs, ${MEM_MB} MB"
sinfo
