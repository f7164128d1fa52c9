#!/bin/sh
# systemd generator: turn /etc/atomicedge/agent.toml into timer drop-ins.
exec /usr/bin/atomicedge device agent-generator "${1:-/run/systemd/generator}"
