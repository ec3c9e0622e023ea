#!/bin/bash
# halab early hook: mq ({{node_name}}). cloud-init's bootcmd runs it on every boot, right after
# write_files and long before runcmd's setup.sh: starting RabbitMQ here lets the Erlang VM boot while
# cloud-init's remaining stages run. Idempotent and quick (systemctl --no-block).
set -eu
SELF=rabbit@{{node_name}}
mkdir -p /var/lib/halab
if [ ! -f /var/lib/halab/mq-initialised ]; then
    # The lab's cookie, not the image's; a node started before with another cookie would refuse to
    # cluster, so its database starts from a clean slate.
    install -o rabbitmq -g rabbitmq -m 0400 /etc/halab/erlang.cookie /var/lib/rabbitmq/.erlang.cookie
    rm -rf /var/lib/rabbitmq/mnesia/"$SELF"*
    touch /var/lib/halab/mq-initialised
fi
# erl-guard.sh in place of erl before RabbitMQ starts (why: in that file). dpkg-divert keeps the real
# script as erl.distrib, also across a package upgrade.
ERL=/usr/lib/erlang/bin/erl
if [ "$(dpkg-divert --truename "$ERL")" != "$ERL.distrib" ]; then
    dpkg-divert --quiet --local --rename --divert "$ERL.distrib" --add "$ERL"
fi
cmp -s /usr/local/lib/halab/erl-guard.sh "$ERL" || install -m 0755 /usr/local/lib/halab/erl-guard.sh "$ERL"
systemctl start --no-block rabbitmq-server.service
