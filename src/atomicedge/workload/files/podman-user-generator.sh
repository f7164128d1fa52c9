#!/bin/sh
# Quadlet user generator (atomicedge), run by each user's systemd --user manager.
export PYTHONPATH="/usr/lib/atomicedge/python:/usr/lib/atomicedge/site${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 -m atomicedge.workload.quadlet -user -argv0 "$0" "$@"
