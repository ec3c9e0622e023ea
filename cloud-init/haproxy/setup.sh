#!/bin/bash
# halab role setup: haproxy ({{node_name}}, profile {{profile}}). Run once per instance by cloud-init.
set -Eeuo pipefail
HALAB_NODE={{node_name}}
HALAB_ROLE=haproxy
. /usr/local/lib/halab/lib.sh
halab_begin

step "check haproxy.cfg" haproxy -c -q -f /etc/haproxy/haproxy.cfg
step "own haproxy.cfg" chgrp haproxy /etc/haproxy/haproxy.cfg
if [ "{{profile}}" = "ha" ]; then
    step "enable haproxy and keepalived" halab_enable haproxy.service keepalived.service
    step "start haproxy and keepalived" systemctl start --no-block haproxy.service keepalived.service
else
    step "enable haproxy" halab_enable haproxy.service
    step "start haproxy" systemctl start --no-block haproxy.service
fi
step "wait for the API frontend" wait_for 18 tcp_open 127.0.0.1 80
step "wait for the stats listener" wait_for 18 tcp_open 127.0.0.1 8404
if [ "{{profile}}" = "ha" ]; then
    step "wait for keepalived" wait_for 18 systemctl is-active --quiet keepalived.service
fi
halab_ready
