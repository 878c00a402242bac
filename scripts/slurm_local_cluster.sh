#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try `simclr ablate --launcher slurm` on a laptop and to test
# it in CI. Debian/Ubuntu, run as root:
#
#   scripts/slurm_local_cluster.sh            # install slurm-wlm + munge if missing, configure, start
#   scripts/slurm_local_cluster.sh --stop     # stop the daemons (the config stays)
#
# munged runs with a freshly generated key; slurmctld and slurmd run on this host name with
# proctrack/linuxproc + task/none (no cgroups needed, so it also works in containers) and cons_tres
# scheduling of CPUS (default 2) CPUs; KillWait=2 (scancel takes effect within 2 s). It waits until
# `sbatch` is answered and prints `sinfo`.
# Idempotent: a cluster that already answers is left running as it is.
set -euo pipefail

CPUS=${CPUS:-2}
CONF_DIR=/etc/slurm
STATE=${SLURM_LOCAL_STATE:-/var/lib/simclr-slurm}
HOST=$(hostname -s)

stop() {
  for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  [ -f /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
  echo "slurm_local_cluster: stopped"
}

if [ "${1:-}" = "--stop" ]; then stop; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then echo "slurm_local_cluster: run as root (it installs packages and starts daemons)" >&2; exit 1; fi

if sinfo -h >/dev/null 2>&1 && sbatch --version >/dev/null 2>&1 && scontrol ping 2>/dev/null | grep -q UP; then
  echo "slurm_local_cluster: already running"; sinfo; exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: a generated key, readable by its owner only (munged refuses anything else)
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
  su -s /bin/sh munge -c "/usr/sbin/munged --force" || /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null

mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" /var/log/slurm
cat > "$CONF_DIR/slurm.conf" <<EOF
# written by simclr scripts/slurm_local_cluster.sh: one node, $CPUS CPUs, no cgroups, no accounting
ClusterName=simclr-local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerParameters=sched_interval=2
MessageTimeout=20
KillWait=2
MinJobAge=300
NodeName=$HOST CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

[ -f "$STATE/slurmctld.pid" ] && kill "$(cat "$STATE/slurmctld.pid")" 2>/dev/null || true
[ -f "$STATE/slurmd.pid" ] && kill "$(cat "$STATE/slurmd.pid")" 2>/dev/null || true
sleep 0.5
/usr/sbin/slurmctld -c     # -c: a clean state; jobs of an earlier cluster are not revived
/usr/sbin/slurmd

for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm_local_cluster: up on $HOST ($CPUS CPUs)"; sinfo; exit 0
  fi
  sleep 0.5
done
echo "slurm_local_cluster: slurmd did not register; last log lines:" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2
exit 1
