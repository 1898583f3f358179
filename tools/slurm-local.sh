#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages (slurmctld, slurmd,
# slurm-client, munge): for tests/workflow/test_slurm.py and for trying the SLURM profile.
#
#   tools/slurm-local.sh install   install the packages (root or password-less sudo + apt-get)
#   tools/slurm-local.sh start     install if needed, write the config, start munged,
#                                  slurmctld and slurmd, wait until `sinfo` shows the node idle
#   tools/slurm-local.sh status    exit 0 when the cluster answers (sinfo), 1 otherwise
#   tools/slurm-local.sh stop      stop the three daemons this script started
#
# Works without systemd (starts the daemons directly) and is idempotent: a running cluster
# is left alone. /etc/slurm/slurm.conf is written only when absent or when an earlier run of
# this script wrote it (its first line is the marker below); a hand-written one is kept and
# used as it is. Exit status: 0 ok; 1 the cluster could not be started (the message and
# the daemons' log tails say why); 3 this machine cannot have it: packages missing and no
# way to install them (no apt-get), or not root: callers (the tests) skip on 3, fail on 1.
set -uo pipefail

MARKER="# written by cellbench tools/slurm-local.sh (delete this line to keep your own edits)"
CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
MUNGE_SOCKET_DIR=/run/munge
FOREIGN_CONF=""

die() { echo "slurm-local: $*" >&2; exit 1; }
cannot_install() { echo "slurm-local: cannot set up SLURM here: $*" >&2; exit 3; }
say() { echo "slurm-local: $*"; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    SUDO=(false)  # set below: only `status` works without root
fi

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || echo "$pkg"
    done
}

install_packages() {
    local missing
    if ! command -v dpkg-query >/dev/null 2>&1; then
        command -v sinfo >/dev/null 2>&1 && command -v slurmctld >/dev/null 2>&1 \
            && command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 && return 0
        cannot_install "no dpkg/apt-get (not Debian/Ubuntu); install slurmctld, slurmd and munge yourself"
    fi
    mapfile -t missing < <(missing_packages)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || cannot_install "no apt-get; install ${missing[*]} yourself"
    [ "${SUDO[0]:-}" = false ] && cannot_install "not root (and no password-less sudo); run 'sudo $0 install'"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # the packages' own start scripts are refused or fail without systemd: we start them below
    if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        "${SUDO[@]}" apt-get update -q \
            && "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
            || cannot_install "apt-get install ${missing[*]} failed (see above)"
    fi
    mapfile -t missing < <(missing_packages)
    [ ${#missing[@]} -eq 0 ] || cannot_install "still missing after apt-get: ${missing[*]}"
}

cluster_answers() {
    # the node is up and can take jobs (idle, mixed or allocated), not down/drained
    command -v sinfo >/dev/null 2>&1 || return 1
    local state
    state=$(timeout 10 sinfo --noheader --format=%t 2>/dev/null) || return 1
    grep -Eq '^(idle|mix|alloc|comp)' <<<"$state"
}

pid_alive() {  # pid_alive PIDFILE NAME: the pid file's process is running and is NAME
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

log_tails() {
    local f
    for f in /var/log/munge/munged.log "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        [ -f "$f" ] && { echo "--- tail of $f"; tail -n 15 "$f"; }
    done >&2
}

write_config() {
    local node host conf
    host=$(hostname -s)
    # this machine's CPUs, sockets, cores, threads and memory, as slurmd sees them
    node=$(slurmd -C 2>/dev/null | head -n 1)
    [[ "$node" == NodeName=* ]] || die "'slurmd -C' did not print a NodeName line: $node"
    conf="$MARKER
# Single-node cluster for tests: no cgroups, no accounting database (sacct has nothing; the
# snakemake profile keeps slurm-status-command: squeue, which needs MinJobAge well above
# its status-check interval).
ClusterName=cellbench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
KillWait=10
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
${node/ UpTime=*/} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    if [ -f "$CONF" ] && ! head -n 1 "$CONF" | grep -qxF "$MARKER"; then
        say "keeping $CONF (not written by this script)"
        FOREIGN_CONF=" (with the hand-written $CONF: fix it, or delete it to get this script's)"
        return 1
    fi
    if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$conf" ]; then
        return 1
    fi
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$conf" >"$CONF"
    say "wrote $CONF"
    return 0  # changed
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key || die "mungekey failed"
        else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
        fi
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p "$MUNGE_SOCKET_DIR" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_SOCKET_DIR" /var/log/munge /var/lib/munge
    chmod 755 "$MUNGE_SOCKET_DIR"
    # a stale pid file or socket from a killed munged makes the new one refuse to start
    pid_alive "$MUNGE_SOCKET_DIR/munged.pid" munged \
        || rm -f "$MUNGE_SOCKET_DIR/munged.pid" "$MUNGE_SOCKET_DIR"/munge.socket.2*
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged || { log_tails; die "munged did not start"; }
    for _ in $(seq 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    log_tails
    die "munged runs but munge -n | unmunge fails"
}

start_slurm() {
    local changed=$1
    mkdir -p "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    chown slurm:slurm "$LOG_DIR" "$STATE_DIR/slurmctld"
    if [ "$changed" = yes ]; then
        # a new config for running daemons: restart them (only ours, by their pid files)
        pid_alive /run/slurmd.pid slurmd && kill "$(cat /run/slurmd.pid)"
        pid_alive /run/slurmctld.pid slurmctld && kill "$(cat /run/slurmctld.pid)"
        sleep 2
    fi
    if ! pid_alive /run/slurmctld.pid slurmctld; then
        say "starting slurmctld"
        # -c: a clean start (no saved jobs/nodes from an earlier config or machine)
        slurmctld -c || { log_tails; die "slurmctld did not start$FOREIGN_CONF"; }
    fi
    for _ in $(seq 30); do
        timeout 5 scontrol ping 2>/dev/null | grep -q "is UP" && break
        sleep 0.5
    done
    timeout 5 scontrol ping 2>/dev/null | grep -q "is UP" \
        || { log_tails; die "slurmctld does not answer 'scontrol ping'$FOREIGN_CONF"; }
    if ! pid_alive /run/slurmd.pid slurmd; then
        say "starting slurmd"
        slurmd || { log_tails; die "slurmd did not start$FOREIGN_CONF"; }
    fi
}

wait_for_node() {
    for _ in $(seq 60); do
        cluster_answers && return 0
        sleep 0.5
    done
    # a node left DOWN/DRAINED by an earlier run (e.g. killed daemons): put it back once
    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1
    for _ in $(seq 20); do
        cluster_answers && return 0
        sleep 0.5
    done
    sinfo -N -l >&2 2>&1
    log_tails
    die "the node never became idle (see sinfo above)$FOREIGN_CONF"
}

cmd_start() {
    install_packages
    if cluster_answers; then
        say "cluster is up"
        sinfo
        return 0
    fi
    [ "${SUDO[0]:-}" = false ] && cannot_install "not root (and no password-less sudo): cannot start the daemons; run 'sudo $0 start'"
    [ "$(id -u)" -eq 0 ] || exec "${SUDO[@]}" "$0" start
    local changed=no
    write_config && changed=yes
    start_munge
    start_slurm "$changed"
    wait_for_node
    say "cluster is up"
    sinfo
}

cmd_stop() {
    [ "$(id -u)" -eq 0 ] || { [ "${SUDO[0]:-}" != false ] && exec "${SUDO[@]}" "$0" stop; }
    local name file
    for name in slurmd slurmctld munged; do
        file=/run/$name.pid
        [ "$name" = munged ] && file=$MUNGE_SOCKET_DIR/munged.pid
        if pid_alive "$file" "$name"; then
            say "stopping $name"
            kill "$(cat "$file")"
        fi
    done
}

case "${1:-start}" in
    install) install_packages; say "packages installed: ${PACKAGES[*]}" ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cluster_answers && { sinfo; exit 0; }; echo "slurm-local: no cluster answers sinfo"; exit 1 ;;
    *) echo "usage: $0 [install|start|status|stop]" >&2; exit 2 ;;
esac
