# Shared shell helpers for the halab role setup scripts (sourced, not executed).
# Each setup script runs once per instance from cloud-init's runcmd. A step that fails stops the
# script, leaves /var/lib/halab/failed naming the step, and makes cloud-init report an error;
# the last step writes /var/lib/halab/ready, the marker halab checks over SSH.

HALAB_STATE=/var/lib/halab
HALAB_STEP="start"

halab_begin() {
    mkdir -p "$HALAB_STATE"
    chmod 0755 "$HALAB_STATE"
    rm -f "$HALAB_STATE/ready" "$HALAB_STATE/failed"
    trap 'halab_failed $? $LINENO' ERR
}

halab_failed() {
    local rc=$1 line=$2
    printf 'step=%s\nexit=%s\nline=%s\ntime=%s\n' "$HALAB_STEP" "$rc" "$line" "$(date -u +%FT%TZ)" \
        > "$HALAB_STATE/failed"
    echo "halab: FAILED at step '$HALAB_STEP' (exit $rc, line $line)" >&2
    exit "$rc"
}

# step "description" command args... : run one named step.
step() {
    HALAB_STEP=$1
    shift
    echo "halab: $HALAB_STEP"
    "$@"
}

# wait_for SECONDS command args... : retry until the command succeeds, or fail after SECONDS.
wait_for() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "halab: gave up after ${limit}s waiting for: $*" >&2
            return 1
        fi
        sleep 1
    done
}

# tcp_open HOST PORT : true when something accepts a TCP connection there (1 s timeout).
tcp_open() {
    timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

halab_ready() {
    HALAB_STEP="ready marker"
    local iid
    iid=$(cat /var/lib/cloud/data/instance-id 2>/dev/null || echo unknown)
    printf 'instance-id=%s\nnode=%s\nrole=%s\nfinished=%s\nuptime=%s\n' \
        "$iid" "$HALAB_NODE" "$HALAB_ROLE" "$(date -u +%FT%TZ)" "$(cut -d' ' -f1 /proc/uptime)" \
        > "$HALAB_STATE/ready.tmp"
    mv "$HALAB_STATE/ready.tmp" "$HALAB_STATE/ready"
    echo "halab: $HALAB_NODE ready"
}
