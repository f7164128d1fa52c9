#!/bin/sh
# atomicedge on the device: the device closure shipped by the image builder, on Debian's python3.
exec /usr/bin/python3 -m atomicedge.cli.main "$@"
