#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine for tests/test_engine/test_cpu_distributed.py (tools/slurm_*.sh).
#
#   sudo bash .ci/start_slurm.sh     # .ci/run calls it before the tests; CI runs as root
#
# Installs Debian's slurm-wlm and munge if they are missing (apt), writes a minimal
# /etc/slurm/slurm.conf (one node, this host, every CPU, partition "ci", no cgroups: the CI
# container has neither systemd nor a writable cgroup tree), starts munged, slurmctld and slurmd
# as plain background daemons and waits until `sinfo` reports the node idle.
#
# Idempotent: a node that already answers idle is left alone, the packages are installed once,
# and a slurm.conf that this script did not write is never overwritten (it stops with an error).
# State and logs live under $SLURM_CI_DIR (default /tmp/spanet-slurm).
set -euo pipefail

STATE=${SLURM_CI_DIR:-/tmp/spanet-slurm}
CONF=/etc/slurm/slurm.conf
MARKER='# written by spanet_mm .ci/start_slurm.sh'
PARTITION=ci
WAIT_S=${SLURM_CI_WAIT_S:-60}

log() { echo "start_slurm: $*"; }
fail() { echo "start_slurm: ERROR: $*" >&2; exit 1; }

node_idle() {
  # "idle" (or "mixed"/"allocated": a job already runs) on the one node of our partition.
  sinfo -h -p "$PARTITION" -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)$'
}

if [ "$(id -u)" != 0 ]; then
  fail "run as root (it installs packages and starts the Slurm daemons); got uid $(id -u)"
fi

if command -v sinfo >/dev/null && node_idle; then
  log "Slurm already runs here; partition $PARTITION is up: nothing to do."
  exit 0
fi

start=$(date +%s)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v srun >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge (apt)"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' postinst would start the daemons through invoke-rc.d, which fails without
  # an init system and a slurm.conf (and fails the install). Docker images forbid that with
  # a policy-rc.d that exits 101; supply one for the install if this image has none.
  POLICY=/usr/sbin/policy-rc.d
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod +x "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
  fi
  apt-get update -qq
  # --no-install-recommends: the daemons and clients only, not the docs and extra plugins.
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  log "installed in $(( $(date +%s) - start )) s"
fi

# ---- munge: the authentication Slurm's daemons and clients share ---------------------------
if [ ! -s /etc/munge/munge.key ]; then
  # Debian's postinst creates the key; create one if it did not (e.g. a trimmed image).
  mungekey --create --force
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  # As the munge user, as its systemd unit does (munged refuses a root-owned key dir).
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.5
  done
  munge -n | unmunge >/dev/null || fail "munged does not answer (see /var/log/munge/munged.log)"
fi

# ---- slurm.conf -------------------------------------------------------------------------
if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  fail "$CONF exists and was not written by this script; not overwriting it. Remove it or " \
       "start that cluster's daemons yourself."
fi
NODE=$(hostname -s)
CPUS=$(nproc)
mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log"
cat > "$CONF" <<EOF
$MARKER
# One node (this host), every CPU, no GPUs, no cgroups, no accounting: a test cluster.
ClusterName=spanet-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Config values win over what slurmd detects, and a restarted node returns to service.
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# ---- the daemons --------------------------------------------------------------------------
stop_pidfile() {
  # A daemon left from an earlier start of this script (another config, a crash): stop it.
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$pidfile"
}
stop_pidfile "$STATE/slurmd.pid"
stop_pidfile "$STATE/slurmctld.pid"
log "starting slurmctld and slurmd (node $NODE, $CPUS CPUs, partition $PARTITION)"
# -c: a clean start, no job state from an earlier run of this script.
slurmctld -c
slurmd -N "$NODE"

for _ in $(seq $(( WAIT_S * 2 ))); do
  node_idle && break
  sleep 0.5
done
if ! node_idle; then
  sinfo -N -l >&2 || true
  tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
  fail "the node did not come up idle within ${WAIT_S} s (logs above, in $STATE/log)"
fi
sinfo
log "Slurm is up in $(( $(date +%s) - start )) s"
