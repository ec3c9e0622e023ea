#!/usr/bin/env bash
# halab set-up: makes a fresh Debian 12 host ready. Idempotent and non-interactive.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc python3-dev
  qemu-system-x86 qemu-utils mmdebstrap dnsmasq-base iproute2 iptables e2fsprogs
  cloud-init haproxy keepalived mariadb-server openssh-client ca-certificates curl
  chromium chromium-driver   # the browser tier (pytest -m browser) drives a real browser viewer
)

say() { printf 'setup: %s\n' "$*"; }

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "installing Debian packages: ${need_apt[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # haproxy, keepalived and mariadb are here only to check rendered configs: a policy-rc.d keeps
  # their package scripts from starting them on the host.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  rc=0
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold "${need_apt[@]}" >/dev/null || rc=$?
  [ -n "$policy_added" ] && $SUDO rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || { say "ERROR: apt-get install failed (exit $rc)"; exit 1; }
  # cloud-init on the host is only for `cloud-init schema`; never let it run at boot here.
  $SUDO touch /etc/cloud/cloud-init.disabled 2>/dev/null || true
else
  say "Debian packages already installed"
fi

# Terraform is not packaged by Debian; it must be on PATH already.
if ! command -v terraform >/dev/null; then
  say "ERROR: terraform not found on PATH. Install Terraform >= 1.6 (https://developer.hashicorp.com/terraform/install) and re-run."
  exit 1
fi
tf_ver=$(terraform version -json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["terraform_version"])')
if ! python3 - "$tf_ver" <<'PY'
import sys
major, minor = (int(x) for x in sys.argv[1].split(".")[:2])
sys.exit(0 if (major, minor) >= (1, 6) else 1)
PY
then
  say "ERROR: terraform $tf_ver is too old; halab needs >= 1.6."
  exit 1
fi
say "terraform $tf_ver ok"

# Python environment with pinned dependencies; reinstall only when requirements change.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python dependencies"
  .venv/bin/pip install -q -r requirements.txt -r requirements-dev.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
  [ "${PIPESTATUS[0]}" -eq 0 ] || { say "ERROR: pip install failed"; exit 1; }
  echo "$want" > "$stamp"
else
  say "Python dependencies up to date"
fi

# Without udev (containers, CI) /dev/kvm stays root-only. libvirt then finds KVM "enabled when
# probing but not available now" and re-probes QEMU on every domain define (~40 s each). Give it the
# group and mode Debian's udev rule would. halab still uses KVM only after its own boot probe.
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
  say "giving /dev/kvm group kvm, mode 0660 (what udev does on a normal host)"
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# Hosts without an init system (containers, CI): start the libvirt daemons ourselves.
if ! pidof virtlogd >/dev/null 2>&1; then
  say "starting virtlogd"
  virtlogd -d
fi
if ! pidof libvirtd >/dev/null 2>&1; then
  say "starting libvirtd"
  libvirtd -d
fi
say "ready. Next: ./lab.py doctor, then ./lab.py up (or run the tests: .venv/bin/pytest)"
