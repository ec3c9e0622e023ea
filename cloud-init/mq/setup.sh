#!/bin/bash
# halab role setup: mq ({{node_name}}, profile {{profile}}). Run once per instance by cloud-init.
set -Eeuo pipefail
HALAB_NODE={{node_name}}
HALAB_ROLE=mq
. /usr/local/lib/halab/lib.sh
halab_begin

FIRST=rabbit@{{first_mq}}
SELF=rabbit@{{node_name}}

install_cookie() {
    install -o rabbitmq -g rabbitmq -m 0400 /etc/halab/erlang.cookie /var/lib/rabbitmq/.erlang.cookie
    # A node started before with another cookie would refuse to cluster: start from a clean slate.
    rm -rf /var/lib/rabbitmq/mnesia/"$SELF"*
}
first_up() { rabbitmqctl -q -n "$FIRST" await_startup --timeout 5; }
is_member_of_first() { rabbitmqctl -q cluster_status 2>/dev/null | grep -qw "$FIRST"; }
join_first() {
    if is_member_of_first; then
        echo "halab: already clustered with $FIRST"
        return 0
    fi
    rabbitmqctl -q stop_app
    rabbitmqctl -q reset
    rabbitmqctl -q join_cluster "$FIRST"
    rabbitmqctl -q start_app
}
grow_queues() {
    # Not fatal: with no quorum queue declared yet there is nothing to grow, and a queue declared
    # after this node joined gets a replica here anyway (initial group size = cluster size).
    rabbitmq-queues -q grow "$SELF" all --vhost-pattern '.*' --queue-pattern '.*' \
        || echo "halab: warning: could not grow quorum queues onto $SELF" >&2
}
# Every rabbitmqctl call starts an Erlang VM (seconds of CPU under TCG): on a fresh node create
# things directly and accept only "already exists" / "does not exist" as the answer of a re-run.
rmq_tolerating() {
    local pattern=$1 out
    shift
    out=$(rabbitmqctl -q "$@" 2>&1) && return 0
    grep -qiE "$pattern" <<<"$out" && return 0
    echo "$out" >&2
    return 1
}
setup_users() {
    local pw
    pw=$(cat /etc/halab/mq-password)
    rmq_tolerating "already exists" add_vhost '{{mq_vhost}}'
    local out
    if ! out=$(rabbitmqctl -q add_user '{{mq_user}}' "$pw" 2>&1); then
        grep -qi "already exists" <<<"$out" || { echo "$out" >&2; return 1; }
        rabbitmqctl -q change_password '{{mq_user}}' "$pw"
    fi
    rabbitmqctl -q set_permissions -p '{{mq_vhost}}' '{{mq_user}}' '.*' '.*' '.*'
    rmq_tolerating "does not exist|no_such_user" delete_user guest
}

if [ ! -f /var/lib/halab/mq-initialised ]; then
    step "install the Erlang cookie" install_cookie
    touch /var/lib/halab/mq-initialised
fi
step "enable rabbitmq-server" halab_enable rabbitmq-server.service
step "start rabbitmq-server" systemctl start --no-block rabbitmq-server.service
# Poll the AMQP port (cheap) rather than rabbitmqctl, whose Erlang VM competes with the booting
# server for the one vCPU; then one await_startup confirms the node is fully up.
step "wait for the AMQP port" wait_for 300 tcp_open 127.0.0.1 5672
step "wait for rabbitmq" rabbitmqctl -q await_startup --timeout 120
if [ "$SELF" != "$FIRST" ]; then
    step "wait for $FIRST" wait_for 900 first_up
    step "join $FIRST" join_first
    # Quorum queues declared while this node was away get a replica here too.
    step "grow quorum queues onto $SELF" grow_queues
else
    step "users, vhost and permissions" setup_users
fi
halab_ready
