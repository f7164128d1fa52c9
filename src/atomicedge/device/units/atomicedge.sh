#!/bin/sh
# atomicedge entry point inside the image. Python code is looked up in the image first, then
# in /usr/lib/atomicedge/{python,site} (bind-mounted by the nspawn test harness).
export PYTHONPATH="/usr/lib/atomicedge/python:/usr/lib/atomicedge/site${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 -m atomicedge.cli.main "$@"
