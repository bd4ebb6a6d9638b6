#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on localhost, everything under one work directory.
#
#   tests/cluster/slurm.sh start  <workdir>   # start munged (+ mariadbd, slurmdbd), slurmctld, slurmd
#   tests/cluster/slurm.sh stop   <workdir>   # cancel jobs, stop the daemons, kill leftovers
#   tests/cluster/slurm.sh status <workdir>   # daemons alive? sinfo/squeue
#
# `start` prints progress on stdout and, last, `export SLURM_CONF=<workdir>/slurm.conf`
# (also written to <workdir>/env.sh); clients (sbatch, squeue, sacct, scancel, submitit, Hydra's
# submitit_slurm launcher) need SLURM_CONF in their environment.
#
# Exit codes of `start`: 0 up; 3 SLURM/munge not installed and not installable (one line on stderr
# says why: tests skip on it); 1 anything else (the daemons' log tails are printed).
#
# What runs (all as root, nothing in /etc, /run or /var is used or touched):
#   munged    own key, socket, pid, log and seed files under <workdir>/munge (slurm.conf's
#             AuthInfo=socket=... points SLURM at it), so a system munged does not matter.
#   mariadbd  + slurmdbd: accounting storage, so that `sacct` works (submitit polls job states with
#             sacct; without it finished jobs are only seen through their result files and a job that
#             dies without one is waited on forever). Optional: SLURM_HELPER_ACCOUNTING=none skips
#             it, =auto (default) uses it when mariadbd/slurmdbd are (or can be) installed,
#             =required fails without it.
#   slurmctld, slurmd  one node (the real CPU count and memory from `slurmd -C`), partition `debug`
#             (default), select/cons_tres with CR_Core_Memory, so 1-CPU jobs run side by side.
# TCP ports: 4 consecutive free ones from a base derived from the workdir (SLURM_HELPER_PORT sets the
# base), so clusters in different work directories do not clash.
set -uo pipefail

die() { echo "slurm.sh: $*" >&2; exit 1; }

usage() { echo "usage: $0 start|stop|status <workdir>" >&2; exit 2; }

[ $# -eq 2 ] || usage
CMD=$1
W=$2
case "$W" in /*) ;; *) W="$(pwd)/$W" ;; esac
W=${W%/}

CORE_BINS=(munged slurmctld slurmd sbatch squeue sacct scancel sinfo scontrol srun)
ACCT_BINS=(slurmdbd mariadbd mariadb-install-db mariadb)

missing() { local b out=(); for b in "$@"; do command -v "$b" >/dev/null 2>&1 || out+=("$b"); done; echo "${out[*]}"; }

# apt-get install, `apt-get update` once only if the first try fails. Output goes to a log file.
apt_install() {
    local log=$1; shift
    command -v apt-get >/dev/null 2>&1 || { echo "apt-get not found" >>"$log"; return 1; }
    export DEBIAN_FRONTEND=noninteractive
    # (DPkg::Lock::Timeout: wait for a concurrent apt/dpkg instead of failing at once)
    apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" >>"$log" 2>&1 && return 0
    apt-get update -q >>"$log" 2>&1 || return 1
    apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" >>"$log" 2>&1
}

# ---------------------------------------------------------------- process helpers
# Does process $1 belong to this workdir (its command line or its environment names "$W/")?
owned() {
    local pid=$1
    [ -r "/proc/$pid/cmdline" ] || return 1
    grep -qzF -- "$W/" "/proc/$pid/cmdline" 2>/dev/null && return 0
    grep -qzF -- "SLURM_CONF=$W/slurm.conf" "/proc/$pid/environ" 2>/dev/null && return 0
    return 1
}

# Is process $1 a leftover of this cluster: a process naming "$W/" on its command line, or one started
# with our SLURM_CONF that is a SLURM daemon/slurmstepd or runs inside a job (SLURM_JOB_ID set)?
# (A client that merely has SLURM_CONF, e.g. the test runner, is left alone.)
leftover() {
    local pid=$1
    [ -r "/proc/$pid/cmdline" ] || return 1
    grep -qzF -- "$W/" "/proc/$pid/cmdline" 2>/dev/null && return 0
    grep -qzF -- "SLURM_CONF=$W/slurm.conf" "/proc/$pid/environ" 2>/dev/null || return 1
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
    slurmstepd|slurmd|slurmctld|slurmdbd) return 0 ;;
    esac
    grep -qzE -- "^SLURM_JOB_ID=" "/proc/$pid/environ" 2>/dev/null
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

pid_from() { [ -s "$1" ] && tr -dc '0-9' <"$1"; }

# my own pid and those of my ancestors: never killed
ancestors() {
    local p=$$
    while [ -n "$p" ] && [ "$p" != 0 ]; do
        echo "$p"
        p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null)
    done
}

# stop_pid NAME PIDFILE: SIGTERM the daemon named in PIDFILE (if it is ours), wait, then SIGKILL.
stop_pid() {
    local name=$1 file=$2 pid i
    pid=$(pid_from "$file") || true
    if [ -n "$pid" ] && alive "$pid" && owned "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            echo "slurm.sh: $name ($pid) ignored SIGTERM for 10 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
            for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        fi
    fi
    rm -f "$file"
}

# Kill every remaining process of this cluster (job steps, slurmstepd, a daemon whose pid file was
# lost), except this script and its ancestors.
kill_leftovers() {
    local keep pid left=() i
    keep=" $(ancestors | tr '\n' ' ') "
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [[ $keep == *" $pid "* ]] && continue
        leftover "$pid" && left+=("$pid")
    done
    [ ${#left[@]} -eq 0 ] && return 0
    echo "stopping leftover processes: ${left[*]}"
    kill -TERM "${left[@]}" 2>/dev/null
    for i in $(seq 1 30); do
        local any=0
        for pid in "${left[@]}"; do alive "$pid" && any=1; done
        [ $any = 0 ] && return 0
        sleep 0.1
    done
    kill -KILL "${left[@]}" 2>/dev/null
    sleep 0.2
}

do_stop() {
    if [ -f "$W/slurm.conf" ] && [ -n "$(pid_from "$W/run/slurmctld.pid")" ]; then
        export SLURM_CONF=$W/slurm.conf
        local jobs i
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then
            timeout 10 scancel $jobs >/dev/null 2>&1
            for i in $(seq 1 50); do
                [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
    fi
    stop_pid slurmd "$W/run/slurmd.pid"
    stop_pid slurmctld "$W/run/slurmctld.pid"
    stop_pid slurmdbd "$W/run/slurmdbd.pid"
    stop_pid mariadbd "$W/db/mariadbd.pid"
    stop_pid munged "$W/munge/munged.pid"
    kill_leftovers
}

# ---------------------------------------------------------------- start
# Four consecutive free TCP ports (127.0.0.1) starting from a base derived from the workdir.
pick_ports() {
    python3 - "$W" "${SLURM_HELPER_PORT:-}" <<'EOF'
import socket, sys, zlib
w, base = sys.argv[1], sys.argv[2]
start = int(base) if base else 20000 + (zlib.crc32(w.encode()) % 2500) * 4
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
p = start
while p < 32000:
    if all(free(p + i) for i in range(4)):
        print(p, p + 1, p + 2, p + 3); break
    p += 4
else:
    sys.exit("no free ports")
EOF
}

tail_logs() {
    local f
    for f in "$W"/log/*.log "$W/munge/munged.log"; do
        [ -f "$f" ] || continue
        echo "---- tail $f" >&2
        tail -n 25 "$f" >&2
    done
}

fail() { echo "slurm.sh: $*" >&2; tail_logs; do_stop >/dev/null 2>&1; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
    local t=$1 what=$2 end; shift 2
    end=$(( $(date +%s) + t ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$end" ] && fail "timed out after ${t}s waiting for $what"
        sleep 0.2
    done
}

do_start() {
    local t0 miss acct=${SLURM_HELPER_ACCOUNTING:-auto}
    t0=$(date +%s.%N)
    mkdir -p "$W" || die "cannot create $W"
    # unix socket paths are limited to 107 bytes (slurmstepd puts <spool>/<node>_<job>.<step> there)
    [ ${#W} -le 70 ] || die "work directory path too long for unix sockets (${#W} > 70 chars): $W"

    if [ "$(id -u)" != 0 ]; then
        echo "SLURM test cluster needs root (slurmd runs the jobs; SlurmUser=root), running as $(id -un)" >&2
        exit 3
    fi
    miss=$(missing "${CORE_BINS[@]}")
    if [ -n "$miss" ]; then
        echo "installing slurm-wlm munge (missing: $miss)"
        apt_install "$W/apt.log" slurm-wlm munge
        miss=$(missing "${CORE_BINS[@]}")
        if [ -n "$miss" ]; then
            echo "SLURM not available: missing $miss and 'apt-get install slurm-wlm munge' failed: $(tail -n 1 "$W/apt.log" 2>/dev/null)" >&2
            exit 3
        fi
    fi
    case "$acct" in
    none) ;;
    auto|required)
        miss=$(missing "${ACCT_BINS[@]}")
        if [ -n "$miss" ]; then
            echo "installing slurmdbd mariadb-server-core mariadb-client-core (missing: $miss)"
            apt_install "$W/apt.log" slurmdbd mariadb-server-core mariadb-client-core
            miss=$(missing "${ACCT_BINS[@]}")
        fi
        if [ -n "$miss" ]; then
            [ "$acct" = required ] && die "accounting required but missing: $miss (see $W/apt.log)"
            echo "warning: no accounting (missing $miss): sacct will not work" >&2
            acct=none
        else
            acct=slurmdbd
        fi
        ;;
    *) die "SLURM_HELPER_ACCOUNTING must be auto, required or none (got $acct)" ;;
    esac

    # a previous run: stop whatever it left running, then start from clean directories
    do_stop >/dev/null
    rm -rf "$W/state" "$W/spool" "$W/run" "$W/log" "$W/munge" "$W/db" "$W/env.sh" \
        "$W/slurm.conf" "$W/slurmdbd.conf"
    mkdir -p "$W/state" "$W/spool" "$W/run" "$W/log" "$W/munge" || die "cannot create dirs in $W"
    chmod 755 "$W"
    chmod 755 "$W/munge"  # munged wants the socket dir executable by all

    local host ports p_ctld p_d p_dbd p_db node cpus mem defmem
    host=$(hostname -s)
    ports=$(pick_ports) || die "no free TCP ports"
    read -r p_ctld p_d p_dbd p_db <<<"$ports"
    node=$(slurmd -C 2>/dev/null | head -n 1)
    [[ $node == NodeName=* ]] || die "'slurmd -C' failed: $node"
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot read CPUs/RealMemory from: $node"
    node=${node/NodeName=* CPUs=/CPUs=}    # keep the hardware part, our own name and address
    defmem=$(( mem / cpus ))

    # ---- munge
    head -c 1024 /dev/urandom >"$W/munge/munge.key" && chmod 400 "$W/munge/munge.key"
    # --force: munged otherwise insists that every directory above the socket is world-executable
    # (pytest's /tmp/pytest-of-root is 0700); only root uses this socket
    munged --force --socket="$W/munge/munge.sock" --key-file="$W/munge/munge.key" \
        --pid-file="$W/munge/munged.pid" --log-file="$W/munge/munged.log" \
        --seed-file="$W/munge/munged.seed" --num-threads=2 \
        || fail "munged did not start"
    wait_for 10 "munged" bash -c "munge -n -S '$W/munge/munge.sock' | unmunge -S '$W/munge/munge.sock'"
    echo "munged up (socket $W/munge/munge.sock)"

    # ---- slurm.conf
    local acct_lines="AccountingStorageType=accounting_storage/none"
    if [ "$acct" = slurmdbd ]; then
        acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$p_dbd
AccountingStoragePass=$W/munge/munge.sock"
    fi
    cat >"$W/slurm.conf" <<EOF
# generated by tests/cluster/slurm.sh for $W
ClusterName=jfxtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$p_ctld
SlurmdPort=$p_d
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$W/munge/munge.sock
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/run/slurmctld.pid
SlurmdPidFile=$W/run/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
$acct_lines
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
ReturnToService=2
EnforcePartLimits=ALL
MaxArraySize=10001
MaxJobCount=20000
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$W/slurm.conf
    printf 'export SLURM_CONF=%s\n' "$W/slurm.conf" >"$W/env.sh"

    # ---- accounting: mariadbd + slurmdbd
    if [ "$acct" = slurmdbd ]; then
        mkdir -p "$W/db"
        mariadb-install-db --no-defaults --datadir="$W/db/data" --user=root \
            --auth-root-authentication-method=socket --skip-test-db >"$W/log/mariadb-install.log" 2>&1 \
            || fail "mariadb-install-db failed (see $W/log/mariadb-install.log)"
        setsid mariadbd --no-defaults --user=root --datadir="$W/db/data" --socket="$W/db/mariadbd.sock" \
            --port="$p_db" --bind-address=127.0.0.1 --pid-file="$W/db/mariadbd.pid" \
            --log-error="$W/log/mariadb.log" --tmpdir="$W/db" --skip-name-resolve --skip-log-bin \
            --innodb-buffer-pool-size=32M --innodb-log-file-size=16M --innodb-use-native-aio=0 \
            --innodb-lock-wait-timeout=900 --performance-schema=0 \
            </dev/null >>"$W/log/mariadb.log" 2>&1 &
        wait_for 60 "mariadbd" mariadb --no-defaults --socket="$W/db/mariadbd.sock" -uroot -e "select 1"
        mariadb --no-defaults --socket="$W/db/mariadbd.sock" -uroot -e \
            "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
            || fail "cannot create the slurm database user"
        echo "mariadbd up (port $p_db)"
        cat >"$W/slurmdbd.conf" <<EOF
# generated by tests/cluster/slurm.sh for $W
AuthType=auth/munge
AuthInfo=socket=$W/munge/munge.sock
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$p_dbd
SlurmUser=root
LogFile=$W/log/slurmdbd.log
PidFile=$W/run/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$p_db
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
        chmod 600 "$W/slurmdbd.conf"
        # slurmdbd reads slurmdbd.conf next to $SLURM_CONF
        slurmdbd </dev/null >>"$W/log/slurmdbd.log" 2>&1 || fail "slurmdbd did not start"
        wait_for 60 "slurmdbd" sacctmgr -n list cluster
        echo "slurmdbd up (port $p_dbd)"
    fi

    # ---- slurmctld, slurmd
    slurmctld -f "$W/slurm.conf" -i </dev/null >>"$W/log/slurmctld.log" 2>&1 || fail "slurmctld did not start"
    wait_for 60 "slurmctld" scontrol ping
    slurmd -f "$W/slurm.conf" </dev/null >>"$W/log/slurmd.log" 2>&1 || fail "slurmd did not start"
    wait_for 60 "node $host to be idle" bash -c "sinfo -h -n '$host' -o %T | grep -qx idle"
    if [ "$acct" = slurmdbd ]; then
        wait_for 30 "cluster registration in slurmdbd" bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx jfxtest"
    fi
    echo "cluster up in $(python3 -c "import time;print(round(time.time()-$t0,1))") s: node $host CPUs=$cpus RealMemory=$mem, partition debug, ports ctld=$p_ctld slurmd=$p_d, accounting=$acct"
    echo "export SLURM_CONF=$W/slurm.conf"
}

do_status() {
    local n f pid rc=0
    for n in munge/munged db/mariadbd run/slurmdbd run/slurmctld run/slurmd; do
        f="$W/$n.pid"
        [ -e "$f" ] || continue
        pid=$(pid_from "$f")
        if alive "$pid"; then echo "${n##*/}: running ($pid)"; else echo "${n##*/}: dead (stale $f)"; rc=1; fi
    done
    if [ -f "$W/slurm.conf" ]; then
        export SLURM_CONF=$W/slurm.conf
        timeout 10 sinfo || rc=1
        timeout 10 squeue
    else
        echo "no cluster in $W"; rc=1
    fi
    return $rc
}

case "$CMD" in
start) do_start ;;
stop) do_stop; echo "stopped" ;;
status) do_status ;;
*) usage ;;
esac
