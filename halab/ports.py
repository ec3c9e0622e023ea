"""The TCP ports the lab's services listen on, said once: the configs halab renders (haproxy.cfg,
the API's config) and the code that talks to them (probes, traffic, boot priority) read these.

A leaf module (no imports): both the lab-building and the observing modules may use it.
"""

from __future__ import annotations

FRONTEND_PORT = 80  # HAProxy's API frontend (also on the keepalived VIP in `ha`)
STATS_PORT = 8404  # HAProxy's stats: /stats, /stats;csv, /metrics
API_PORT = 8080  # the lab API on each api node
GALERA_PORT = 3306  # MariaDB / Galera (and HAProxy's Galera frontend in `ha`)
GALERA_CHECK_PORT = 9200  # each db node's "am I Synced" HTTP check (`ha`)
AMQP_PORT = 5672  # RabbitMQ
