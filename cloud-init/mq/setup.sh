#!/bin/bash
# halab role setup: mq ({{node_name}}, profile {{profile}}). Run once per instance by cloud-init.
set -Eeuo pipefail
HALAB_NODE={{node_name}}
HALAB_ROLE=mq
. /usr/local/lib/halab/lib.sh
halab_begin

FIRST=rabbit@{{first_mq}}
SELF=rabbit@{{node_name}}

# The membership RabbitMQ itself records on disk (rabbit_node_monitor's cluster_nodes.config:
# {[AllNodes], [DiscNodes]}): no Erlang VM to ask. Peer discovery (rabbitmq.conf) joined the first
# node at this node's first boot unless it gave up; only then does setup join by hand.
CLUSTER_FILE=/var/lib/rabbitmq/mnesia/$SELF/cluster_nodes.config
is_member_of_first() { grep -qsF "'$FIRST'" "$CLUSTER_FILE"; }
JOINED_BY_HAND=0
join_first() {
    if is_member_of_first; then
        echo "halab: clustered with $FIRST (peer discovery at first boot)"
        return 0
    fi
    JOINED_BY_HAND=1
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

# A re-run (an earlier setup failed; `up` runs it again): quorum queues may have been declared
# while this node was not a member, so it grows them onto itself below.
RERUN=0
[ -f /var/lib/halab/mq-setup-started ] && RERUN=1
touch /var/lib/halab/mq-setup-started

# early.sh (cloud-init bootcmd) installed the lab's Erlang cookie and already started the server.
step "check that early.sh ran (cloud-init bootcmd)" test -f /var/lib/halab/mq-initialised
step "enable rabbitmq-server" halab_enable rabbitmq-server.service
step "start rabbitmq-server" systemctl start --no-block rabbitmq-server.service
if [ "$SELF" != "$FIRST" ]; then
    # A joining node's server waits in peer discovery until the first node's database answers,
    # so its own AMQP port opens only after that: wait for the first node first. The lab user's
    # login there proves it serves, at the cost of one short Python process (no Erlang VM).
    step "wait for $FIRST" wait_for 90 amqp_login {{first_mq}}
fi
# Poll the AMQP port (cheap) rather than rabbitmqctl, whose Erlang VM competes with the booting
# server for the one vCPU; then a login as the lab user confirms the node is fully up.
step "wait for the AMQP port" wait_for 30 tcp_open 127.0.0.1 5672
step "log in as {{mq_user}}" wait_for 12 amqp_login 127.0.0.1
if [ "$SELF" != "$FIRST" ]; then
    step "join $FIRST" join_first
    # Quorum queues declared while this node was not a member get a replica here too. A node that
    # joined by discovery at its first boot joined before the API nodes (the next boot wave)
    # declared any queue: nothing to grow, and one Erlang VM saved.
    if [ "$JOINED_BY_HAND" = 1 ] || [ "$RERUN" = 1 ]; then
        step "grow quorum queues onto $SELF" grow_queues
    fi
fi
halab_ready
