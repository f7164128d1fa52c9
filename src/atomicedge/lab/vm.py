"""Virtual machines for disk images: QEMU with a serial console log and a command channel.

``run`` starts ``qemu-system-x86_64`` (TCG by default: KVM hangs on these machines, see
machine-notes section 4; ``accel="kvm"`` when it works) on an image built by
``compose build --type qcow2|edge-raw-image``. Each VM has a directory (``$ATOMICEDGE_VM_DIR``
or ``/run/atomicedge/vms``)/NAME holding ``vm.json``, the QEMU pid file, the console log of the
first serial port, and ``agent.sock``: the virtio-serial port ``org.atomicedge.agent`` that the
image's agent (``--vm-agent``, :mod:`atomicedge.compose.disk_agent`) answers. The guest's
reboots stay inside the one QEMU process; ``kill`` is a power cut (SIGKILL, no shutdown).
Port forwards bind 127.0.0.1 only; the guest reaches the host's loopback as 10.0.2.2.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from atomicedge.errors import NotFoundError, ToolError, UsageError

OVMF = Path("/usr/share/ovmf/OVMF.fd")
QEMU = "qemu-system-x86_64"
AGENT_PORT = "org.atomicedge.agent"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
FORWARD_RE = re.compile(r"^(\d{1,5}):(\d{1,5})$")


def vm_root() -> Path:
    return Path(os.environ.get("ATOMICEDGE_VM_DIR", "/run/atomicedge/vms"))


@dataclass
class VmSpec:
    name: str
    image: Path
    uefi: bool = False
    smp: int = 2
    mem: int = 2048
    forwards: list[str] = field(default_factory=list)     # HOST:GUEST tcp ports
    console: Path | None = None
    ignition: Path | None = None
    accel: str = "tcg"
    cdrom: Path | None = None      # an ISO on an IDE CD-ROM, booted first (once)


@dataclass
class ExecResult:
    rc: int
    out: bytes
    err: bytes

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")


def vm_dir(name: str) -> Path:
    if not NAME_RE.match(name):
        raise UsageError(f"invalid VM name {name!r}", "use lower-case letters, digits, '-', "
                         "'_', '.'")
    return vm_root() / name


def _check(spec: VmSpec) -> None:
    if not spec.image.is_file():
        raise NotFoundError(f"image {spec.image} does not exist",
                            "build one: atomicedge compose build BP --type qcow2 --output FILE")
    if spec.smp < 1 or spec.mem < 256:
        raise UsageError("--smp must be >= 1 and --mem >= 256 (MiB)")
    for fwd in spec.forwards:
        m = FORWARD_RE.match(fwd)
        if not m or not all(0 < int(p) < 65536 for p in m.groups()):
            raise UsageError(f"--forward {fwd!r} is not HOST:GUEST", "e.g. --forward 2222:22")
    if spec.uefi and not OVMF.is_file():
        raise NotFoundError(f"--uefi needs {OVMF}", "apt-get install ovmf")
    if spec.ignition is not None and not spec.ignition.is_file():
        raise NotFoundError(f"--ignition {spec.ignition} does not exist")
    if spec.cdrom is not None and not spec.cdrom.is_file():
        raise NotFoundError(f"--cdrom {spec.cdrom} does not exist")
    if spec.accel not in ("tcg", "kvm"):
        raise UsageError(f"--accel {spec.accel!r}", "use tcg or kvm")
    if shutil.which(QEMU) is None:
        raise NotFoundError(f"{QEMU} is not installed", "apt-get install qemu-system-x86")


def image_format(path: Path) -> str:
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


def qemu_argv(spec: VmSpec, d: Path, console: Path, *, foreground: bool) -> list[str]:
    accel = "kvm" if spec.accel == "kvm" else "tcg,thread=multi"
    argv = [QEMU, "-name", f"atomicedge-vm-{spec.name}", "-accel", accel,
            "-cpu", "host" if spec.accel == "kvm" else "max",
            "-smp", str(spec.smp), "-m", str(spec.mem), "-display", "none",
            "-pidfile", str(d / "qemu.pid"),
            "-drive", f"file={spec.image.resolve()},format={image_format(spec.image)},"
                      "if=virtio,cache=writeback",
            "-chardev", f"socket,id=agent,path={d / 'agent.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
            "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off"]
    if foreground:
        argv += ["-chardev", f"stdio,id=ser0,signal=on,logfile={console}",
                 "-serial", "chardev:ser0"]
    else:
        argv += ["-chardev", f"file,id=ser0,path={console}", "-serial", "chardev:ser0"]
    fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}"
                  for h, g in (f.split(":") for f in spec.forwards))
    argv += ["-netdev", f"user,id=n0{fwd}", "-device", "virtio-net-pci,netdev=n0"]
    if spec.uefi:
        argv += ["-bios", str(OVMF)]
    if spec.ignition is not None:
        argv += ["-fw_cfg", f"name=opt/com.coreos/config,file={spec.ignition.resolve()}"]
    if spec.cdrom is not None:     # the installer ISO: CD first, the disk after a reboot
        argv += ["-drive", f"file={spec.cdrom.resolve()},media=cdrom,if=ide,readonly=on",
                 "-boot", "once=d"]
    return argv


def run(spec: VmSpec, *, detach: bool = True) -> int:
    """Start the VM; detached: return its QEMU pid once running, else wait for QEMU's exit."""
    _check(spec)
    d = vm_dir(spec.name)
    if is_running(spec.name):
        raise UsageError(f"VM {spec.name!r} is already running", f"atomicedge vm kill {spec.name}")
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    console = (spec.console or d / "console.log").resolve()
    console.parent.mkdir(parents=True, exist_ok=True)
    meta = asdict(spec) | {"console": str(console), "image": str(spec.image.resolve()),
                           "started": time.time()}
    (d / "vm.json").write_text(json.dumps(meta, default=str, indent=2))
    argv = qemu_argv(spec, d, console, foreground=not detach)
    if not detach:
        return subprocess.run(argv).returncode
    with open(d / "qemu.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + 60
    while not (d / "qemu.pid").exists() or not (d / "agent.sock").exists():
        if proc.poll() is not None:
            raise ToolError(f"qemu exited at once (exit {proc.returncode}): "
                            + (d / "qemu.log").read_text(errors="replace").strip()[-400:])
        if time.monotonic() > deadline:
            _kill_pid(proc.pid)
            raise ToolError("qemu did not start within 60 s", f"see {d / 'qemu.log'}")
        time.sleep(0.05)
    return proc.pid


def wait_exit(name: str, timeout: float = 600.0) -> float:
    """Poll until the VM's QEMU has exited (the guest powered off); returns the seconds it
    took. Reaps QEMU when it is our child."""
    start = time.monotonic()
    try:
        pid = int((vm_dir(name) / "qemu.pid").read_text().strip())
    except (OSError, ValueError):
        pid = None
    while is_running(name):
        if time.monotonic() - start > timeout:
            raise ToolError(f"vm {name}: still running after {timeout:g} s",
                            f"see the console log {console_path(name)}")
        time.sleep(1)
    if pid is not None:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return time.monotonic() - start


def pid_of(name: str) -> int | None:
    """The running QEMU of VM ``name`` (checked against /proc, never a recycled pid)."""
    d = vm_dir(name)
    try:
        pid = int((d / "qemu.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if f"atomicedge-vm-{name}".encode() not in cmdline:
        return None
    try:
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return None
    except (OSError, IndexError):
        return None
    return pid


def is_running(name: str) -> bool:
    return pid_of(name) is not None


def kill(name: str) -> bool:
    """Power cut: SIGKILL QEMU (the disk keeps what the guest had written)."""
    pid = pid_of(name)
    if pid is None:
        return False
    _kill_pid(pid)
    return True


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:   # not our child: wait for /proc to forget it
            if not Path(f"/proc/{pid}").exists():
                return
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
            if state == "Z":
                return
        time.sleep(0.05)


def ls() -> list[dict[str, object]]:
    out = []
    root = vm_root()
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            meta = json.loads((d / "vm.json").read_text())
        except (OSError, ValueError):
            continue
        pid = pid_of(d.name)
        out.append({"name": d.name, "running": pid is not None, "pid": pid,
                    "image": meta.get("image"), "uefi": meta.get("uefi"),
                    "console": meta.get("console"), "forwards": meta.get("forwards")})
    return out


def console_path(name: str) -> Path:
    meta = json.loads((vm_dir(name) / "vm.json").read_text())
    return Path(meta["console"])


def exec_(name: str, cmd: str, *, timeout: float = 600.0,
          answer_timeout: float | None = None) -> ExecResult:
    """Run ``cmd`` (sh -c) in the guest through the agent; waits for the answer (up to
    ``answer_timeout``, default the command's ``timeout`` + 30 s)."""
    wait = answer_timeout if answer_timeout is not None else timeout + 30
    d = vm_dir(name)
    if not is_running(name):
        raise NotFoundError(f"VM {name!r} is not running", "start it: atomicedge vm run IMAGE")
    rid = uuid.uuid4().hex
    req = json.dumps({"id": rid, "cmd": cmd, "timeout": timeout}) + "\n"
    with open(d / "agent.lock", "w") as lock:       # one client at a time on the port
        fcntl.flock(lock, fcntl.LOCK_EX)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(d / "agent.sock"))
            s.settimeout(wait)
            s.sendall(req.encode())
            buf = b""
            while True:
                try:
                    chunk = s.recv(1 << 16)
                except TimeoutError:
                    raise ToolError(f"vm {name}: no answer from the agent within "
                                    f"{wait:g} s", "is the guest up? (vm wait)") from None
                if not chunk:
                    raise ToolError(f"vm {name}: agent channel closed")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        resp = json.loads(line)
                    except ValueError:
                        continue
                    if resp.get("id") == rid:      # answers to abandoned requests are dropped
                        return ExecResult(int(resp["rc"]), base64.b64decode(resp["out"]),
                                          base64.b64decode(resp["err"]))


def wait_agent(name: str, timeout: float = 600.0) -> float:
    """Poll until the guest's agent answers; returns the seconds it took."""
    start = time.monotonic()
    while True:
        if not is_running(name):
            raise ToolError(f"vm {name}: QEMU is not running",
                            f"see {vm_dir(name) / 'qemu.log'} and the console log")
        try:
            exec_(name, "true", timeout=5, answer_timeout=5)
            return time.monotonic() - start
        except (ToolError, OSError):
            pass
        if time.monotonic() - start > timeout:
            raise ToolError(f"vm {name}: the agent did not answer within {timeout:g} s",
                            f"see the console log {console_path(name)}")
        time.sleep(1)


def wait_console(name: str, pattern: str, *, start: int = 0, timeout: float = 600.0) -> int:
    """Wait until the console log, from byte ``start``, matches ``pattern``; returns the end
    offset of the match (pass it as ``start`` to wait for the next occurrence)."""
    path = console_path(name)
    rx = re.compile(pattern.encode())
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = path.read_bytes()[start:]
        except FileNotFoundError:
            data = b""
        m = rx.search(data)
        if m:
            return start + m.end()
        if time.monotonic() > deadline:
            raise ToolError(f"vm {name}: {pattern!r} did not appear on the console within "
                            f"{timeout:g} s", f"see {path}")
        if not is_running(name):
            raise ToolError(f"vm {name}: QEMU exited before {pattern!r} appeared",
                            f"see {path}")
        time.sleep(0.5)
