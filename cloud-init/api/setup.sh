#!/bin/bash
# halab role setup: api ({{node_name}}, profile {{profile}}). Run once per instance by cloud-init.
set -Eeuo pipefail
HALAB_NODE={{node_name}}
HALAB_ROLE=api
. /usr/local/lib/halab/lib.sh
halab_begin

add_user() {
    id -u halab-api >/dev/null 2>&1 || \
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin halab-api
}
step "service user" add_user
step "config readable by the service" chown root:halab-api /etc/halab/api.json
step "config mode" chmod 0640 /etc/halab/api.json
# No daemon-reload: systemd loads the unit file written by cloud-init when it is first started.
step "enable halab-api" halab_enable halab-api.service
step "start halab-api" systemctl start --no-block halab-api.service
step "wait for the API port" wait_for 18 tcp_open 127.0.0.1 {{api_port}}
halab_ready
