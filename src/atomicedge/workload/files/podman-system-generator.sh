#!/bin/sh
# Quadlet system generator (atomicedge): Debian 12's podman 4.3.1 has no Quadlet, this is ours.
# systemd runs it as: podman-system-generator normal-dir early-dir late-dir
exec /usr/bin/python3 -m atomicedge.workload.quadlet -argv0 "$0" "$@"
