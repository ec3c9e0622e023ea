#!/bin/bash
# halab role setup: db ({{node_name}}, profile {{profile}}). Run once per instance by cloud-init.
set -Eeuo pipefail
HALAB_NODE={{node_name}}
HALAB_ROLE=db
. /usr/local/lib/halab/lib.sh
halab_begin

wsrep_synced() {
    [ "$(mysql -N -B -e "SHOW GLOBAL STATUS LIKE 'wsrep_local_state'" | cut -f2)" = "4" ]
}

# No daemon-reload: systemd loads the unit files written by cloud-init when they are first started.
if [ "{{profile}}" = "ha" ]; then
    # mariadb.service stays disabled: halab-galera decides at each boot whether to join or bootstrap.
    step "keep mariadb.service out of boot" halab_disable mariadb.service
    step "enable halab-galera" halab_enable halab-galera.service
    step "start galera (join or bootstrap)" systemctl start halab-galera.service
    step "wait until synced" wait_for 60 wsrep_synced
    if [ "{{node_name}}" = "{{first_db}}" ]; then
        step "create database and users" mysql --batch -e "source /etc/halab/db-init.sql"
    fi
    step "enable clustercheck" halab_enable halab-clustercheck.service
    step "start clustercheck" systemctl start --no-block halab-clustercheck.service
    step "wait for clustercheck" wait_for 18 tcp_open 127.0.0.1 {{galera_check_port}}
else
    step "enable mariadb" halab_enable mariadb.service
    step "start mariadb" systemctl start --no-block mariadb.service
    step "wait for mariadb" wait_for 12 mysqladmin --silent ping
    step "create database and users" mysql --batch -e "source /etc/halab/db-init.sql"
fi
halab_ready
