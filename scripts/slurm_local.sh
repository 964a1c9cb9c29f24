#!/usr/bin/env bash
# The cluster path, tested on a real Slurm: a one-node cluster on localhost (munged, slurmctld,
# slurmd from Debian's packages) runs a small DAG through profiles/slurm, adapted as a site would
# adapt it (a copy with other partition names and a small node's sizes):
#   fetch tiny-shakespeare + GPT-2 BPE from the offline mirror (submit host, localrules)
#   -> 4 training jobs (Slurm) -> 4 analyses (one grouped Slurm job) -> aggregate (Slurm)
#   -> one LaTeX table (submit host).
# Then a longer training job gets SIGTERM from Slurm after its first checkpoint (as the profile's
# --signal=TERM@120 sends before the time limit): Snakemake's retry resumes it from that checkpoint.
# The jobs run the checkout's venv without it being activated (PATH holds no venv).
#
#   make slurm-test                     # or: bash scripts/slurm_local.sh
#
# Needs root and apt (installs slurmctld slurmd slurm-client munge when missing). Starts only its
# own daemons, with their own key, socket, ports and state under a temporary directory, and stops
# them by PID on exit. No accounting database: the executor plugin reads job states with `squeue`
# (MinJobAge keeps finished jobs visible). Env: VENV (default .venv), MIRROR (default
# ../shared/datasets), KEEP=1 keeps the work directory for inspection.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(cd "${VENV:-$REPO/.venv}" && pwd)
MIRROR=$(cd "${MIRROR:-$REPO/../shared/datasets}" && pwd)
TARGET=results/slurm_local/paper/generated/slurm_local/table_main.tex
SBIN=/usr/sbin

die() { echo "slurm_local: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (to install Slurm with apt and run slurmd)"
[ -x "$VENV/bin/snakemake" ] || die "no snakemake in $VENV (make setup)"
[ -f "$MIRROR/tinyshakespeare/input.txt" ] || die "no tinyshakespeare/input.txt under MIRROR=$MIRROR"

if ! { [ -x $SBIN/slurmctld ] && [ -x $SBIN/slurmd ] && [ -x $SBIN/munged ] && command -v sbatch >/dev/null; }; then
  echo "slurm_local: installing Slurm from Debian packages (apt-get)"
  apt-get update -qq
  # policy-rc.d or not: the packages' own services are never used here
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

W=$(mktemp -d /tmp/optirep-slurm.XXXXXX)
chmod 700 "$W"
PIDS=()
stop_daemons() {
  local rc=$? pid i jobpids=""
  set +e  # every step of the clean-up runs, whatever fails
  if [ ${#PIDS[@]} -ge 3 ]; then
    # Jobs first: slurmd would leave their slurmstepd and processes running. Cancel, wait, then
    # end by PID whatever this node's slurmd still lists (scontrol listpids).
    jobpids=$(timeout 10 scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}')
    timeout 10 scancel --full $(timeout 10 squeue -h -o %i 2>/dev/null) 2>/dev/null || true
    for _ in $(seq 30); do [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
    for pid in $jobpids; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do  # slurmd, slurmctld, munged: reverse start order
    pid=${PIDS[$i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ] || [ $rc != 0 ]; then echo "slurm_local: work directory kept: $W" >&2; else rm -rf "$W"; fi
  exit $rc
}
trap stop_daemons EXIT
trap 'exit 130' INT TERM

# ---- munge: a private key and socket
mkdir -p "$W/munge" "$W/ctld" "$W/d" "$W/log"
chmod 700 "$W/munge"
dd if=/dev/urandom of="$W/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$W/munge/munge.key"
$SBIN/munged --foreground --force --key-file="$W/munge/munge.key" --socket="$W/munge/munge.sock" \
  --pid-file="$W/munge/munged.pid" --seed-file="$W/munge/munged.seed" --log-file="$W/log/munged.log" \
  2>>"$W/log/munged.stderr" &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$W/munge/munge.sock" ] && break; sleep 0.2; done
[ -S "$W/munge/munge.sock" ] || die "munged did not start: $(tail -5 "$W/log/munged.log" 2>/dev/null)"

# ---- slurm.conf: one node with this machine's cores, two partitions with site-like names
NODE=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
cat > "$W/slurm.conf" <<EOF
ClusterName=optirep-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$W/munge/munge.sock
StateSaveLocation=$W/ctld
SlurmdSpoolDir=$W/d
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MinJobAge=600
ReturnToService=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=short Nodes=$NODE Default=YES MaxTime=60 State=UP
PartitionName=long Nodes=$NODE MaxTime=120 State=UP
EOF
export SLURM_CONF=$W/slurm.conf
$SBIN/slurmctld -D -i -f "$SLURM_CONF" 2>>"$W/log/slurmctld.stderr" &
PIDS+=($!)
$SBIN/slurmd -D -N "$NODE" -f "$SLURM_CONF" 2>>"$W/log/slurmd.stderr" &
PIDS+=($!)
for _ in $(seq 100); do
  sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break; sleep 0.3
done
sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' \
  || die "node not idle: $(sinfo -N 2>&1 | tail -2); $(tail -5 "$W/log/slurmctld.log" "$W/log/slurmd.log")"
echo "slurm_local: cluster up ($(sinfo -h -o '%P %c CPUs %m MB' | tr '\n' ';'))"

# ---- a clean copy of the checkout on the "shared filesystem", and the site profile
mkdir -p "$W/repo"
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$W/repo" 2>/dev/null) || true
mkdir -p "$W/repo/profiles/site"
# What a user does per site: the shipped profile with this cluster's partitions and node sizes;
# plus faster status polling for a test that takes minutes, and no account on this cluster.
sed -e 's/slurm_partition: "cpu"/slurm_partition: "short"/' -e 's/slurm_partition: "gpu"/slurm_partition: "long"/' \
    -e 's/mem_mb: [0-9]*/mem_mb: 1000/' -e 's/cpus_per_task: [0-9]*/cpus_per_task: 1/' \
    -e 's/runtime: \(480\|240\)$/runtime: 100/' -e "s/^cores: [0-9]*/cores: $CPUS/" \
    "$REPO/profiles/slurm/config.yaml" > "$W/repo/profiles/site/config.yaml"
cat >> "$W/repo/profiles/site/config.yaml" <<'EOF'
slurm-no-account: true
slurm-init-seconds-before-status-checks: 5
slurm-status-command: squeue
slurm-logdir: results/slurm_local/slurm-logs
EOF
! grep -n 'cpu"\|gpu"\|32000\|runtime: 480' "$W/repo/profiles/site/config.yaml" || die "site profile not adapted"

# The config lives at $SLURM_CONF, not /etc/slurm/slurm.conf (left alone). The jobstep plugin
# (snakemake-executor-plugin-slurm-jobstep 0.6.1) drops every SLURM_* variable before the srun it
# runs inside each job, so that srun would find no config: an srun first on PATH restores it.
mkdir -p "$W/bin"
printf '#!/bin/sh\nSLURM_CONF=%q exec %q "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$W/bin/srun"
chmod +x "$W/bin/srun"

# ---- the DAG: no venv on PATH; snakemake is called by its path, as from a job script
cd "$W/repo"
smk() {  # smk LOG TARGET
  env -i HOME="$HOME" PATH="$W/bin:/usr/bin:/bin" SLURM_CONF="$SLURM_CONF" PYTHONPATH="$W/repo/src" \
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg PYTHONHASHSEED=0 \
    timeout -k 30 "${TIMEOUT:-1200}" "$VENV/bin/snakemake" --profile profiles/site \
    --configfile scripts/slurm_local/workflow.yaml --config mirror="$MIRROR" -- "$2" > "$1" 2>&1
}
START=$(date +%s)
set +e
smk "$W/log/snakemake.log" "$TARGET"
RC=$?
set -e
echo "slurm_local: snakemake rc=$RC after $(( $(date +%s) - START )) s (log: $W/log/snakemake.log)"

# ---- time limit: SIGTERM to the steps of a running training job after its first checkpoint, what
# the profile's --signal=TERM@120 makes Slurm send 2 minutes before the limit; the job must
# checkpoint and leave, and Snakemake's retry must resume from that checkpoint
# (run directories are results/<exp>/runs/<task>/<label>/<spec>/seed<s>: found by glob)
START=$(date +%s)
smk "$W/log/preempt.log" results/slurm_preempt/aggregate/gpt1.json &
SMK=$!
for _ in $(seq 600); do compgen -G "results/slurm_preempt/runs/gpt1/adamw/*/seed0/ckpt.pt" >/dev/null && break
  kill -0 $SMK 2>/dev/null || break; sleep 0.5; done
RUN=$(dirname "$(compgen -G "results/slurm_preempt/runs/gpt1/adamw/*/seed0/ckpt.pt" | head -1)")
JOB=$(squeue -h -t RUNNING -o %i | head -1)
[ -n "$JOB" ] && scancel --signal=TERM "$JOB"  # the job steps, not the batch script (as --signal)
TLOG=$(compgen -G "results/slurm_preempt/logs/runs/gpt1/adamw/*/seed0.log" | head -1)
for _ in $(seq 120); do grep -q "SIGTERM at step" "$TLOG" 2>/dev/null && break; sleep 0.5; done
cp "$TLOG" "$W/log/preempted-attempt.log" 2>/dev/null || true  # the retry rewrites the rule's log
set +e
wait $SMK
PRC=$?
set -e
echo "slurm_local: preempted job $JOB; snakemake rc=$PRC after $(( $(date +%s) - START )) s (log: $W/log/preempt.log)"

# ---- what must have happened
fail=0
check() { if eval "$2"; then echo "  ok    $1"; else echo "  FAIL  $1"; fail=1; fi; }
LOG=$W/log/snakemake.log
check "snakemake exit status 0" '[ $RC = 0 ]'
check "the table exists" '[ -s "$TARGET" ] && grep -q "begin{table}" "$TARGET"'
check "fetch ran on the submit host (2 localrule jobs)" '[ "$(grep -c "^localrule fetch:" "$LOG")" = 2 ]'
check "table_main ran on the submit host" 'grep -q "^localrule table_main:" "$LOG"'
check "6 Slurm jobs: 4 training, 1 group of 4 analyses, 1 aggregate" \
  '[ "$(grep -c "has been submitted with SLURM jobid" "$LOG")" = 6 ]'
check "the analyses went as one group job" '[ "$(grep -c "submitted with SLURM jobid .*/group_analyze" "$LOG")" = 1 ]'
check "training jobs asked for the site partition \"long\"" 'grep -q "slurm_partition=long" "$LOG"'
check "training jobs asked for SIGTERM before their time limit" 'grep -q "slurm_extra=--signal=TERM@120" "$LOG"'
check "4 run directories finished" '[ "$(ls results/slurm_local/runs/gpt1/*/*/seed*/metrics.json | wc -l)" = 4 ]'
check "the fetched datasets came from the mirror" '[ -f data/tinyshakespeare/input.txt ] && [ -f data/gpt2/vocab.json ]'
PLOG=$W/log/preempt.log
check "preemption: snakemake exit status 0" '[ $PRC = 0 ]'
check "preemption: the first attempt checkpointed on SIGTERM and left" \
  'grep -q "SIGTERM at step [1-9][0-9]* of 1000; checkpointed" "$W/log/preempted-attempt.log"'
check "preemption: Snakemake resubmitted it (retries)" 'grep -q "Trying to restart job" "$PLOG"'
STOPPED=$(grep -o "SIGTERM at step [0-9]*" "$W/log/preempted-attempt.log" 2>/dev/null | grep -o "[0-9]*$" || true)
check "preemption: the retry resumed from that checkpoint (step ${STOPPED:-?})" \
  '[ -n "$STOPPED" ] && grep -q "resuming from the checkpoint at step $STOPPED\$" "$TLOG"'
check "preemption: the run finished all 1000 steps" \
  'grep -q "\"steps\": 1000" $RUN/metrics.json && grep -q "\"planned_steps\": 1000" $RUN/metrics.json'
if [ $fail != 0 ] || [ $RC != 0 ]; then
  tail -40 "$LOG" >&2
  tail -40 "$PLOG" >&2
  exit 1
fi
echo "slurm_local: passed"
