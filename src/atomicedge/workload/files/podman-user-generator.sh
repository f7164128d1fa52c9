#!/bin/sh
# Quadlet user generator (atomicedge), run by each user's systemd --user manager.
exec /usr/bin/python3 -m atomicedge.workload.quadlet -user -argv0 "$0" "$@"
