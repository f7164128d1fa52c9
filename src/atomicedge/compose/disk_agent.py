"""The VM command channel baked into a disk image (``compose build --vm-agent``).

A tiny agent on the image's own python3 reads JSON requests, one per line, from the
virtio-serial port ``org.atomicedge.agent`` and answers each with the command's exit code and
output. ``atomicedge vm run`` connects that port to a unix socket only the host's user of the
VM can open (like the serial console: whoever runs QEMU owns the machine anyway), and
``atomicedge vm exec`` speaks to it. No network, no keys.

The files go into the deployment's ``/etc`` (like a kickstart ``%post``): the commit stays
exactly the composed one, and the three-way ``/etc`` merge carries the agent across updates.
"""

from __future__ import annotations

import os
from pathlib import Path

PORT_NAME = "org.atomicedge.agent"
UNIT = "atomicedge-vm-agent.service"

AGENT = '''#!/usr/bin/python3
"""atomicedge vm agent: commands from the host over virtio-serial (see compose/disk_agent.py)."""
import base64, json, os, subprocess, time

PORT = "/dev/virtio-ports/@PORT@"
MAX_OUT = 16 << 20


def answer(fd, line):
    try:
        req = json.loads(line)
        p = subprocess.run(req["cmd"], shell=True, capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=float(req.get("timeout", 600)))
        resp = {"id": req.get("id"), "rc": p.returncode,
                "out": base64.b64encode(p.stdout[-MAX_OUT:]).decode(),
                "err": base64.b64encode(p.stderr[-MAX_OUT:]).decode()}
    except subprocess.TimeoutExpired:
        resp = {"id": None, "rc": 124, "out": "", "err": base64.b64encode(b"timed out").decode()}
    except Exception as exc:  # a bad request must not kill the channel
        err = base64.b64encode(str(exc).encode()).decode()
        resp = {"id": None, "rc": 125, "out": "", "err": err}
    data = (json.dumps(resp) + "\\n").encode()
    while data:
        data = data[os.write(fd, data):]


def main():
    while not os.path.exists(PORT):
        time.sleep(0.5)
    fd = os.open(PORT, os.O_RDWR)
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:          # host side not connected
            time.sleep(0.2)
            continue
        buf += chunk
        while b"\\n" in buf:
            line, buf = buf.split(b"\\n", 1)
            if line.strip():
                answer(fd, line)


main()
'''.replace("@PORT@", PORT_NAME)

UNIT_TEXT = """[Unit]
Description=atomicedge vm agent (host commands over virtio-serial @PORT@)
After=basic.target

[Service]
ExecStart=/usr/bin/python3 /etc/atomicedge/vm-agent.py
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
""".replace("@PORT@", PORT_NAME)


def install_agent(deployment: Path) -> None:
    """Put the agent and its enabled unit into ``deployment``/etc."""
    etc = deployment / "etc"
    (etc / "atomicedge").mkdir(parents=True, exist_ok=True)
    script = etc / "atomicedge" / "vm-agent.py"
    script.write_text(AGENT)
    os.chmod(script, 0o700)
    sysd = etc / "systemd" / "system"
    (sysd / "multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    (sysd / UNIT).write_text(UNIT_TEXT)
    link = sysd / "multi-user.target.wants" / UNIT
    if not link.is_symlink():
        os.symlink(f"/etc/systemd/system/{UNIT}", link)
