#!/usr/bin/env bash
# The project's real one-node SLURM (22.05, Debian bookworm) for tests and CI: installs the
# packages when missing, writes /etc/slurm, and starts or stops munged, MariaDB, slurmdbd,
# slurmctld and slurmd by pid files kept under one runtime directory. Facts behind the odd lines
# are in shared/reference/local-slurm.md.
#
# Usage (as root): bash tests/slurm/cluster.sh up|down|status|stop-ctld|start-ctld
# Environment: OELLM_SLURM_DIR (runtime dir, default /var/tmp/oellm-slurm),
#              OELLM_SLURM_WAIT (seconds to wait for health, default 60).
set -euo pipefail

readonly RUN_DIR="${OELLM_SLURM_DIR:-/var/tmp/oellm-slurm}"
readonly WAIT_SECS="${OELLM_SLURM_WAIT:-60}"
readonly CONF_DIR=/etc/slurm
readonly CLUSTER=oellm
readonly DB_NAME=slurm_acct_db
readonly DB_USER=slurm
# Only reachable on 127.0.0.1 of a throwaway test machine; not a secret.
readonly DB_PASS=oellm-local-test
readonly DB_PORT=3306
readonly PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)
readonly LOG_DIR="$RUN_DIR/log"
readonly GPU_DIR="$RUN_DIR/gpu"
readonly MY_CNF="$RUN_DIR/mysql/my.cnf"
readonly MY_SOCK="$RUN_DIR/mysql/mysqld.sock"
NODE="$(hostname)"
readonly NODE

# Daemon name -> pid file. The process name is only used to reject a stale pid file whose pid
# was reused after a reboot (/var/tmp survives one); nothing is ever signalled by name.
declare -A PID_FILE=(
    [munged]="$RUN_DIR/munge/munged.pid"
    [mariadbd]="$RUN_DIR/mysql/mysqld.pid"
    [slurmdbd]="$RUN_DIR/slurmdbd.pid"
    [slurmctld]="$RUN_DIR/slurmctld.pid"
    [slurmd]="$RUN_DIR/slurmd.pid"
)
readonly START_ORDER=(munged mariadbd slurmdbd slurmctld slurmd)

log() { printf 'cluster.sh [%(%T)T +%ss]: %s\n' -1 "$SECONDS" "$*" >&2; }

die() {
    log "ERROR: $*"
    show_logs
    exit 1
}

show_logs() {
    local f
    for f in "$LOG_DIR"/*.log; do
        [[ -s "$f" ]] || continue
        printf '\n--- tail of %s ---\n' "$f" >&2
        tail -n 15 "$f" >&2
    done
}

# --- pid files -------------------------------------------------------------------------------

pid_of() {
    local file="${PID_FILE[$1]}" pid
    [[ -r "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n "$pid" ]] || return 1
    printf '%s\n' "$pid"
}

# alive PID: true while PID exists and is not a zombie. PID 1 of this machine image reaps
# orphans only every couple of seconds, and kill -0 succeeds on a zombie.
alive() {
    local state
    state="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

is_running() {
    local name="$1" pid comm
    pid="$(pid_of "$name")" || return 1
    alive "$pid" || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    # mariadbd may have been started through its mysqld alias.
    [[ "$comm" == "$name" || ("$name" == mariadbd && "$comm" == mysqld) ]]
}

wait_until() {
    # wait_until SECONDS DAEMON DESCRIPTION COMMAND...: polls COMMAND every 0.5 s; gives up early
    # when DAEMON (unless "-") has died, e.g. on "fatal: ... Address already in use".
    local secs="$1" daemon="$2" what="$3" start=$SECONDS
    shift 3
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - start < secs)) || die "timed out after ${secs}s waiting for $what"
        if [[ "$daemon" != - ]] && ((SECONDS - start >= 2)) && ! is_running "$daemon"; then
            die "$daemon exited while waiting for $what (see its log below)"
        fi
        sleep 0.5
    done
}

# spawn COMMAND...: starts a daemon without the lock descriptor (fd 9), which it would otherwise
# keep holding for its whole life, blocking every later cluster.sh call.
spawn() { "$@" 9>&- </dev/null; }

stop_daemon() {
    local name="$1" pid
    if ! is_running "$name"; then
        rm -f "${PID_FILE[$name]}"
        return 0
    fi
    pid="$(pid_of "$name")"
    log "stopping $name (pid $pid)"
    if [[ "$name" == mariadbd ]]; then
        mysqladmin --defaults-file="$MY_CNF" shutdown 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    local deadline=$((SECONDS + 30))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$name (pid $pid) ignored SIGTERM for 30s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    rm -f "${PID_FILE[$name]}"
}

# --- packages --------------------------------------------------------------------------------

ensure_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    # Without systemd the maintainer scripts would start daemons of their own, outside our pid
    # files; policy-rc.d exit 101 forbids that (Docker-style images usually ship one already).
    local own_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        own_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$own_policy"
        chmod 755 "$own_policy"
    fi
    local rc=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}"
    } >"$RUN_DIR/apt.log" 2>&1 || rc=$?
    [[ -n "$own_policy" ]] && rm -f "$own_policy"
    if ((rc != 0)); then
        tail -n 30 "$RUN_DIR/apt.log" >&2
        die "apt-get install ${missing[*]} failed (exit $rc), full log in $RUN_DIR/apt.log"
    fi
}

# --- configuration ---------------------------------------------------------------------------

CHANGED=()

# install_file PATH MODE: writes stdin to PATH only when the content differs, and records PATH
# in CHANGED so that a running daemon reading it is restarted.
install_file() {
    local path="$1" mode="$2" tmp
    tmp="$(mktemp "$path.XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        chmod "$mode" "$path"
        return 0
    fi
    mv -f "$tmp" "$path"
    CHANGED+=("$path")
}

changed() {
    local want="$1" p
    for p in "${CHANGED[@]+"${CHANGED[@]}"}"; do
        [[ "$p" == "$want" ]] && return 0
    done
    return 1
}

write_configs() {
    mkdir -p "$CONF_DIR"
    install_file "$CONF_DIR/slurm.conf" 644 <<EOF
# Written by tests/slurm/cluster.sh; runtime files live in $RUN_DIR.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No mail on this machine; the default /bin/mail is missing and slurmctld logs an error.
MailProg=/bin/true
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$RUN_DIR/slurmctld-state
SlurmdSpoolDir=$RUN_DIR/slurmd-spool
SlurmctldPidFile=${PID_FILE[slurmctld]}
SlurmdPidFile=${PID_FILE[slurmd]}
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroup confinement on this machine; cgroup.conf must exist all the same.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# Without this flag sacct shows an empty Comment column.
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Finished jobs stay visible in squeue/scontrol for 30 s.
MinJobAge=30
OverTimeLimit=0
KillWait=5
InactiveLimit=0
Waittime=0
MaxArraySize=1001
MaxJobCount=20000
ReturnToService=2
# Declare more CPUs than the 2 real cores so that many tiny test jobs run at once, and 8
# GPUs that do not exist (no device files: nothing is bound) so that the cluster presets'
# GPU requests are judged by the controller like any other resource.
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=16 RealMemory=4096 Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
    # The 8 GPUs of slurm.conf. slurmd counts a GPU only by its device file, so each is a
    # character device like /dev/null (1,3): a job that opens one reads nothing, binds nothing.
    mkdir -p "$GPU_DIR"
    local i
    for i in 0 1 2 3 4 5 6 7; do
        [[ -c "$GPU_DIR/nvidia$i" ]] || mknod "$GPU_DIR/nvidia$i" c 1 3
    done
    install_file "$CONF_DIR/gres.conf" 644 <<EOF
NodeName=$NODE Name=gpu File=$GPU_DIR/nvidia[0-7]
EOF
    # CgroupPlugin=disabled does not exist in 22.05 (slurmd: "cannot find cgroup plugin").
    install_file "$CONF_DIR/cgroup.conf" 644 <<EOF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
EOF
    install_file "$CONF_DIR/slurmdbd.conf" 600 <<EOF
# Written by tests/slurm/cluster.sh.
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=${PID_FILE[slurmdbd]}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
    # MariaDB keeps its data, socket, pid and log under RUN_DIR too, so one rm -rf resets all.
    install_file "$MY_CNF" 644 <<EOF
[client]
socket=$MY_SOCK
[mysqld]
datadir=$RUN_DIR/mysql/data
socket=$MY_SOCK
pid-file=${PID_FILE[mariadbd]}
log-error=$LOG_DIR/mariadb.log
bind-address=127.0.0.1
port=$DB_PORT
# slurmdbd logs "Database settings not recommended values" below its production sizes;
# the buffer pool warning that remains is harmless for a test cluster.
innodb_buffer_pool_size=128M
innodb_lock_wait_timeout=900
EOF
}

make_dirs() {
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$RUN_DIR/slurmctld-state" "$RUN_DIR/slurmd-spool" \
        "$RUN_DIR/munge" "$RUN_DIR/mysql" /run/munge
    chmod 755 "$RUN_DIR" "$LOG_DIR"
    chown munge:munge "$RUN_DIR/munge" /run/munge
    chown mysql:mysql "$RUN_DIR/mysql"
    # The daemons running as munge/mysql append to their own logs here.
    touch "$LOG_DIR/munged.log" "$LOG_DIR/mariadb.log"
    chown munge:munge "$LOG_DIR/munged.log"
    chown mysql:mysql "$LOG_DIR/mariadb.log"
}

# --- daemons ---------------------------------------------------------------------------------

start_munged() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mungekey -c -k /etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    is_running munged && return 0
    log "starting munged"
    # --force: a socket left by an unclean stop would otherwise block the start.
    spawn runuser -u munge -- /usr/sbin/munged --force \
        --pid-file="${PID_FILE[munged]}" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$RUN_DIR/munge/munged.seed"
    wait_until 15 munged "munge credentials (munge -n | unmunge)" bash -c 'munge -n | unmunge'
}

mysql_root() { mysql --defaults-file="$MY_CNF" -uroot; }

start_mariadb() {
    local data="$RUN_DIR/mysql/data" bin=/usr/sbin/mariadbd
    [[ -x "$bin" ]] || bin=/usr/sbin/mysqld
    if [[ ! -d "$data/mysql" ]]; then
        log "initialising MariaDB data in $data"
        mariadb-install-db --defaults-file="$MY_CNF" --user=mysql \
            >>"$LOG_DIR/mariadb.log" 2>&1 || die "mariadb-install-db failed"
    fi
    if is_running mariadbd && changed "$MY_CNF"; then
        stop_daemon mariadbd
    fi
    if ! is_running mariadbd; then
        log "starting MariaDB"
        # mysqld does not daemonise itself; setsid detaches it from this shell and its job.
        spawn setsid -f "$bin" --defaults-file="$MY_CNF" --user=mysql >>"$LOG_DIR/mariadb.log" 2>&1
    fi
    wait_until 30 - "MariaDB (mysqladmin ping)" mysqladmin --defaults-file="$MY_CNF" ping
    wait_until 5 - "MariaDB pid file" is_running mariadbd
    mysql_root <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
EOF
}

sacctmgr_answers() { sacctmgr -n -P list cluster format=cluster; }

start_slurmdbd() {
    if is_running slurmdbd && changed "$CONF_DIR/slurmdbd.conf"; then
        stop_daemon slurmdbd
    fi
    if ! is_running slurmdbd; then
        log "starting slurmdbd"
        spawn /usr/sbin/slurmdbd || die "slurmdbd failed to start"
    fi
    wait_until 30 slurmdbd "slurmdbd (sacctmgr list cluster)" sacctmgr_answers
    if ! sacctmgr_answers | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

start_slurm() {
    # Both read slurm.conf and cgroup.conf: restart on change rather than trust reconfigure.
    if changed "$CONF_DIR/slurm.conf" || changed "$CONF_DIR/cgroup.conf" \
        || changed "$CONF_DIR/gres.conf"; then
        stop_daemon slurmd
        stop_daemon slurmctld
    fi
    start_ctld
    if ! is_running slurmd; then
        log "starting slurmd"
        spawn /usr/sbin/slurmd || die "slurmd failed to start"
    fi
}

start_ctld() {
    if ! is_running slurmctld; then
        log "starting slurmctld"
        spawn /usr/sbin/slurmctld || die "slurmctld failed to start"
    fi
    wait_until 30 slurmctld "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q UP'
}

# --- health ----------------------------------------------------------------------------------

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

node_usable() {
    # A trailing *, ~, # or ! marks a node not responding, powered down or changing power.
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

sacct_answers() { sacct -n -X -S now-1minutes -E now -o JobID >/dev/null 2>&1; }

healthy() { node_usable && sacct_answers; }

wait_healthy() {
    local start=$SECONDS resumed=0 state d
    until healthy; do
        if ((SECONDS - start >= 2)); then
            for d in slurmdbd slurmctld slurmd; do
                is_running "$d" || die "$d exited while waiting for the node (see its log below)"
            done
        fi
        state="$(node_state)"
        # A node left down/drained by an earlier crash is not returned by ReturnToService=2
        # if slurmctld set the reason itself (e.g. "Kill task failed"); resume it once.
        if ((resumed == 0)) && [[ "$state" == down* || "$state" == drain* ]]; then
            log "node $NODE is '$state', resuming it"
            scontrol update nodename="$NODE" state=resume 2>/dev/null || true
            resumed=1
        fi
        if ((SECONDS - start >= WAIT_SECS)); then
            log "node state: '${state:-<no answer from sinfo>}'"
            sacct -n -X -S now-1minutes -E now -o JobID >&2 || true
            die "cluster not healthy after ${WAIT_SECS}s (need node idle and sacct answering)"
        fi
        sleep 0.5
    done
}

# --- commands --------------------------------------------------------------------------------

lock() {
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/cluster.lock"
    flock -w 120 9 || die "another cluster.sh holds $RUN_DIR/cluster.lock"
}

cmd_up() {
    lock
    local t0=$SECONDS
    # Fast path; pid files first, because sinfo and sacct retry for seconds without daemons.
    local all=1 name
    for name in "${START_ORDER[@]}"; do is_running "$name" || all=0; done
    if ((all == 1)) && healthy; then
        # Still rewrite configs: a changed config restarts its daemon below.
        write_configs
        if ((${#CHANGED[@]} == 0)); then
            log "already up and healthy (node $(node_state))"
            return 0
        fi
    fi
    ensure_packages
    make_dirs
    write_configs
    start_munged
    start_mariadb
    start_slurmdbd
    start_slurm
    wait_healthy
    log "up in $((SECONDS - t0))s: node $NODE $(node_state), partitions debug (default) and batch"
}

cmd_down() {
    lock
    local i
    for ((i = ${#START_ORDER[@]} - 1; i >= 0; i--)); do
        stop_daemon "${START_ORDER[i]}"
    done
    log "down"
}

cmd_status() {
    local name rc=0 pid
    for name in "${START_ORDER[@]}"; do
        if is_running "$name"; then
            pid="$(pid_of "$name")"
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s stopped\n' "$name"
            rc=1
        fi
    done
    echo
    if command -v sinfo >/dev/null && sinfo 2>&1; then
        node_usable || rc=1
    else
        rc=1
    fi
    return "$rc"
}

cmd_stop_ctld() {
    lock
    stop_daemon slurmctld
}

cmd_start_ctld() {
    lock
    start_ctld
    wait_healthy
}

main() {
    ((EUID == 0)) || {
        log "must run as root: sudo bash $0 ${1:-up}"
        exit 2
    }
    case "${1:-}" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        stop-ctld) cmd_stop_ctld ;;
        start-ctld) cmd_start_ctld ;;
        *)
            log "usage: $0 up|down|status|stop-ctld|start-ctld"
            exit 2
            ;;
    esac
}

main "$@"
