#!/bin/bash
# halab role setup: mq ({{node_name}}, profile {{profile}}). Run once per instance by cloud-init.
set -Eeuo pipefail
HALAB_NODE={{node_name}}
HALAB_ROLE=mq
. /usr/local/lib/halab/lib.sh
halab_begin

FIRST=rabbit@{{first_mq}}
SELF=rabbit@{{node_name}}

is_member_of_first() { rabbitmqctl -q cluster_status 2>/dev/null | grep -qw "$FIRST"; }
join_first() {
    if is_member_of_first; then
        echo "halab: already clustered with $FIRST"
        return 0
    fi
    rabbitmqctl -q stop_app
    rabbitmqctl -q reset
    # Under TCG the Erlang distribution link to the first node can time out (exit 69) although its
    # AMQP login just worked: try again a few times before giving up.
    local try
    for try in 1 2 3; do
        if rabbitmqctl -q join_cluster "$FIRST"; then
            rabbitmqctl -q start_app
            return 0
        fi
        echo "halab: join_cluster $FIRST failed (try $try of 3)" >&2
        sleep 10
    done
    # Never leave the app stopped: a re-run of this setup waits for the AMQP port first, which a
    # stopped app never opens (seen: mq-3 failed its re-run at "wait for the AMQP port").
    rabbitmqctl -q start_app || true
    return 69
}
grow_queues() {
    # Not fatal: with no quorum queue declared yet there is nothing to grow, and a queue declared
    # after this node joined gets a replica here anyway (initial group size = cluster size).
    rabbitmq-queues -q grow "$SELF" all --vhost-pattern '.*' --queue-pattern '.*' \
        || echo "halab: warning: could not grow quorum queues onto $SELF" >&2
}
# The lab user logs in to the lab vhost: proves the definitions were imported and the node serves
# AMQP, at the cost of one short Python process instead of an Erlang VM (rabbitmqctl).
amqp_login() {
    python3 - "$1" <<'PY'
import sys, pika
pw = open("/etc/halab/mq-password").read().strip()
params = pika.ConnectionParameters(sys.argv[1], 5672, "{{mq_vhost}}", pika.PlainCredentials("{{mq_user}}", pw),
                                   socket_timeout=5, blocked_connection_timeout=5)
pika.BlockingConnection(params).close()
PY
}

# early.sh (cloud-init bootcmd) installed the lab's Erlang cookie and already started the server.
step "check that early.sh ran (cloud-init bootcmd)" test -f /var/lib/halab/mq-initialised
step "enable rabbitmq-server" halab_enable rabbitmq-server.service
step "start rabbitmq-server" systemctl start --no-block rabbitmq-server.service
# Poll the AMQP port (cheap) rather than rabbitmqctl, whose Erlang VM competes with the booting
# server for the one vCPU; then a login as the lab user confirms the node is fully up.
step "wait for the AMQP port" wait_for 30 tcp_open 127.0.0.1 5672
step "log in as {{mq_user}}" wait_for 12 amqp_login 127.0.0.1
if [ "$SELF" != "$FIRST" ]; then
    # The lab user's login on the first node proves it serves, as it did here: no Erlang VM for a
    # `rabbitmqctl await_startup` (on a TCG vCPU each rabbitmqctl costs 10-55 s of the boot).
    step "wait for $FIRST" wait_for 90 amqp_login {{first_mq}}
    step "join $FIRST" join_first
    # Quorum queues declared while this node was away get a replica here too.
    step "grow quorum queues onto $SELF" grow_queues
fi
halab_ready
