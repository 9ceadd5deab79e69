#!/usr/bin/env bash
# A real single-node SLURM cluster on this host (Debian's slurm-wlm + munge), for the `slurm` tests and
# for trying the launcher by hand:   sudo tests/slurm/cluster.sh   (idempotent; needs root).
# slurmctld and slurmd run on this host with one partition; the node declares 8 CPUs whatever the machine
# has (SlurmdParameters=config_overrides) so that array-parallelism limits can be observed on 2 cores.
# No accounting storage: job states come from squeue/scontrol, which is what mmsafety's poller reads.
# KillWait=5: a cancelled job (submitit ignores its SIGTERM) is killed 5 s later, not 30.
#   tests/slurm/cluster.sh stop   ends the daemons it started (by their pid files).
set -euo pipefail
if [ "${1:-}" = stop ]; then
    for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    echo "slurm: stopped"; exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "SLURM is not installed: apt-get install slurm-wlm munge (as root)" >&2; exit 2
fi
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > "$CONF.new" <<CONF
ClusterName=mmsafety-ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=600
NodeName=$HOST CPUs=8 RealMemory=262144 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
changed=1; cmp -s "$CONF.new" "$CONF" && changed=0
mv "$CONF.new" "$CONF"
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge; dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chmod 400 /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key 2>/dev/null || true
fi
chown munge:munge /run/munge 2>/dev/null || true
pgrep -x munged >/dev/null || munged --force 2>/dev/null || su -s /bin/sh munge -c "munged --force"
if [ "$changed" = 1 ]; then  # a new config: restart the daemons (waiting for the old ones to be gone)
    pkill -x slurmctld || true; pkill -x slurmd || true
    for _ in $(seq 1 30); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 30); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then echo "slurm: up ($HOST)"; exit 0; fi
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2; exit 1
