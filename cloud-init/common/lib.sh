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

# Timeouts below are KVM seconds; under TCG every guest instruction is emulated (10-20x slower),
# so halab renders a larger factor for a TCG lab (halab.lab.cloudinit.TIMEOUT_SCALE).
HALAB_TIMEOUT_SCALE={{timeout_scale}}

# wait_for SECONDS command args... : retry until the command succeeds, or fail after SECONDS
# (times the accelerator's HALAB_TIMEOUT_SCALE).
wait_for() {
    local limit=$(($1 * HALAB_TIMEOUT_SCALE))
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

# halab_enable UNIT... : enable units at boot as `systemctl enable` does (symlinks for WantedBy=,
# RequiredBy= and Alias= of the unit's [Install] section) without systemctl: for a unit that also
# ships a SysV script (mariadb, haproxy, keepalived, rabbitmq-server) `systemctl enable` runs
# systemd-sysv-install (perl update-rc.d), tens of seconds under TCG, and reloads systemd. No
# daemon-reload is needed: systemd loads a unit file it has not seen when the unit is started.
HALAB_UNIT_ETC=${HALAB_UNIT_ETC:-/etc/systemd/system}  # overridable for tests
HALAB_UNIT_LIB=${HALAB_UNIT_LIB:-/lib/systemd/system}

halab_enable() {
    local unit file key val
    for unit in "$@"; do
        file=$(halab_unit_file "$unit") || { echo "halab: no unit file for $unit" >&2; return 1; }
        while IFS='=' read -r key val; do
            for val in $val; do
                case $key in
                    WantedBy) mkdir -p "$HALAB_UNIT_ETC/$val.wants"
                              ln -sfn "$file" "$HALAB_UNIT_ETC/$val.wants/$unit" ;;
                    RequiredBy) mkdir -p "$HALAB_UNIT_ETC/$val.requires"
                                ln -sfn "$file" "$HALAB_UNIT_ETC/$val.requires/$unit" ;;
                    Alias) [ "$HALAB_UNIT_ETC/$val" = "$file" ] || ln -sfn "$file" "$HALAB_UNIT_ETC/$val" ;;
                esac
            done
        done < <(sed -n '/^\[Install\]/,/^\[/{s/[[:space:]]*=[[:space:]]*/=/;/^\(WantedBy\|RequiredBy\|Alias\)=/p}' "$file")
    done
}

# halab_disable UNIT... : remove the boot symlinks of units (the counterpart of halab_enable).
halab_disable() {
    local unit
    for unit in "$@"; do
        find "$HALAB_UNIT_ETC" -mindepth 2 -maxdepth 2 -type l -name "$unit" \
            \( -path '*.wants/*' -o -path '*.requires/*' \) -delete
        find "$HALAB_UNIT_ETC" -maxdepth 1 -type l -lname "*/$unit" -delete
    done
}

halab_unit_file() {
    local d
    for d in "$HALAB_UNIT_ETC" "$HALAB_UNIT_LIB"; do
        if [ -f "$d/$1" ] && [ ! -L "$d/$1" ]; then
            echo "$d/$1"
            return 0
        fi
    done
    return 1
}

# tcp_open HOST PORT : true when something accepts a TCP connection there. The timeout covers
# starting bash too, which takes seconds when a dozen TCG guests boot on two host cores.
tcp_open() {
    timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
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
    # halab's boot wait reads this marker and then /run/cloud-init/result.json; if cloud-init's final
    # stage ended between the two reads it saw "finished, no marker" and failed the node. Nothing runs
    # after scripts-user now, so keep the final stage open a moment (idle: no CPU).
    sleep "${HALAB_READY_GRACE:-3}"
}
