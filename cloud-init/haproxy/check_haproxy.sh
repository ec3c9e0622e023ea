#!/bin/sh
# keepalived's health script: this node keeps (or may take) the VIP only while HAProxy runs.
exec /usr/bin/systemctl is-active --quiet haproxy.service
