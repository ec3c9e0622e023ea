#!/bin/bash
# Start MariaDB as a member of Galera cluster {{galera_cluster_name}} ({{node_name}}).
# Runs at every boot (halab-galera.service) and from the first-boot setup:
#   * a peer answers on 4567          -> join it (IST/SST as needed)
#   * brand-new cluster, this is {{first_db}} -> bootstrap (galera_new_cluster)
#   * no peer, grastate says safe_to_bootstrap: 1 (this node left last, cleanly) -> bootstrap
#   * no peer, nobody safe (all crashed): {{first_db}} forces a bootstrap after {{galera_force_after}} s
#     (the others will rejoin it; a transaction only another node had would be lost: it is a lab)
# Gives up after {{galera_give_up}} s so boot and cloud-init finish; systemctl start it again later.
set -uo pipefail
SELF={{node_name}}
FIRST={{first_db}}
PEERS=({{db_peer_ips}})
GRASTATE=/var/lib/mysql/grastate.dat
FORCE_AFTER={{galera_force_after}}
GIVE_UP={{galera_give_up}}

log() { echo "halab-galera: $*"; }
peer_up() {
    local ip
    for ip in "${PEERS[@]}"; do
        timeout 1 bash -c "exec 3<>/dev/tcp/$ip/4567" 2>/dev/null && { PEER=$ip; return 0; }
    done
    return 1
}
safe_to_bootstrap() { [ -f "$GRASTATE" ] && grep -Eq '^safe_to_bootstrap:[[:space:]]*1' "$GRASTATE"; }
fresh() { [ ! -f "$GRASTATE" ]; }

if systemctl is-active --quiet mariadb.service; then
    log "mariadb already running"
    exit 0
fi
PEER=""
while :; do
    if peer_up; then
        log "peer $PEER answers: joining the cluster"
        systemctl start mariadb.service && exit 0
        log "join failed; retrying"
    elif fresh && [ "$SELF" = "$FIRST" ]; then
        log "new cluster: bootstrapping on $SELF"
        galera_new_cluster && exit 0
        log "bootstrap failed; retrying"
    elif safe_to_bootstrap; then
        log "no peer answers and this node left the cluster last (safe_to_bootstrap: 1): bootstrapping"
        galera_new_cluster && exit 0
        log "bootstrap failed; retrying"
    elif [ "$SELF" = "$FIRST" ] && [ "$SECONDS" -ge "$FORCE_AFTER" ] && [ -f "$GRASTATE" ]; then
        log "no peer for ${SECONDS}s and no node marked safe: forcing bootstrap on $SELF"
        sed -i -E 's/^safe_to_bootstrap:[[:space:]]*0/safe_to_bootstrap: 1/' "$GRASTATE"
        galera_new_cluster && exit 0
        log "forced bootstrap failed; retrying"
    fi
    if [ "$SECONDS" -ge "$GIVE_UP" ]; then
        log "gave up after ${SECONDS}s"
        exit 1
    fi
    sleep 2
done
