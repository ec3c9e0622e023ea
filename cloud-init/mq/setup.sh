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
setup_users() {
    local pw
    pw=$(cat /etc/halab/mq-password)
    rabbitmqctl -q list_vhosts | grep -qx '{{mq_vhost}}' || rabbitmqctl -q add_vhost '{{mq_vhost}}'
    if rabbitmqctl -q list_users | cut -f1 | grep -qx '{{mq_user}}'; then
        rabbitmqctl -q change_password '{{mq_user}}' "$pw"
    else
        rabbitmqctl -q add_user '{{mq_user}}' "$pw"
    fi
    rabbitmqctl -q set_permissions -p '{{mq_vhost}}' '{{mq_user}}' '.*' '.*' '.*'
    if rabbitmqctl -q list_users | cut -f1 | grep -qx guest; then
        rabbitmqctl -q delete_user guest
    fi
}

if [ ! -f /var/lib/halab/mq-initialised ]; then
    step "install the Erlang cookie" install_cookie
    touch /var/lib/halab/mq-initialised
fi
step "enable rabbitmq-server" halab_enable rabbitmq-server.service
step "start rabbitmq-server" systemctl start --no-block rabbitmq-server.service
step "wait for rabbitmq" wait_for 300 rabbitmqctl -q await_startup --timeout 10
if [ "$SELF" != "$FIRST" ]; then
    step "wait for $FIRST" wait_for 900 first_up
    step "join $FIRST" join_first
    # Quorum queues declared while this node was away get a replica here too.
    step "grow quorum queues onto $SELF" grow_queues
else
    step "users, vhost and permissions" setup_users
fi
halab_ready
