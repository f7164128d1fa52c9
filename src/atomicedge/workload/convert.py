"""Quadlet's conversions (``.container``, ``.volume``, ``.network`` -> ``.service``) for devices.

Keys, names and generated lines follow podman's Quadlet (pkg/systemd/quadlet) for everything
supported here; the differences are what Debian 12's podman 4.3.1 inside an nspawn device needs
(docs/workloads.md, "What differs from Quadlet"):

* containers run with ``--cgroups=disabled`` instead of ``--cgroups=split`` (nspawn mounts the
  v1 controllers read-only; containers.conf from :mod:`podman_defaults` says the same). Then
  podman, conmon and the container's processes all stay in the service's own cgroup, so
  ``Type=notify`` + ``--sdnotify=conmon`` work as in Quadlet: podman reports conmon's PID as
  ``MAINPID`` and systemd's ``Restart=`` watches conmon, which exits when the container does.
  Nothing is delegated (no ``Delegate=yes``);
* podman 4.3.1 has no ``volume create --ignore`` / ``network create --ignore`` (podman 4.4):
  the oneshot units run ``podman volume exists NAME || exec podman volume create ... NAME``;
* Quadlet keys that need a newer podman or cgroups are refused with the reason.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
from dataclasses import dataclass

from atomicedge.errors import UsageError
from atomicedge.workload.unitfile import UnitFile

AUTOUPDATE_LABEL = "io.containers.autoupdate"
UNIT_DEPENDENCY_KEYS = ("After", "Before", "BindsTo", "Conflicts", "OnFailure", "OnSuccess",
                        "PartOf", "PropagatesReloadTo", "PropagatesStopTo",
                        "ReloadPropagatedFrom", "Requires", "Requisite", "StopPropagatedFrom",
                        "Upholds", "Wants")
USER_NETWORK_UNIT = "podman-user-wait-network-online.service"

_CONTAINER_KEYS = {
    "AddCapability", "AddDevice", "AddHost", "Annotation", "AutoUpdate", "CgroupsMode",
    "ContainerName", "DNS", "DNSOption", "DNSSearch", "DropCapability", "Entrypoint",
    "Environment", "EnvironmentFile", "EnvironmentHost", "Exec", "ExposeHostPort", "GIDMap",
    "GlobalArgs", "Group", "GroupAdd", "HealthCmd", "HealthInterval", "HealthOnFailure",
    "HealthRetries", "HealthStartPeriod", "HealthTimeout", "HostName", "HttpProxy", "IP", "IP6",
    "Image", "Label", "LogDriver", "LogOpt", "Mask", "Network", "NetworkAlias",
    "NoNewPrivileges", "Notify", "PodmanArgs", "PublishPort", "Pull", "ReadOnly",
    "ReadOnlyTmpfs", "ReloadCmd", "ReloadSignal", "Rootfs", "RunInit", "SeccompProfile",
    "Secret", "ServiceName", "ShmSize", "StopSignal", "StopTimeout", "SubGIDMap", "SubUIDMap",
    "Sysctl", "Timezone", "Tmpfs", "UIDMap", "Ulimit", "Unmask", "User", "UserNS",
    "VolatileTmp", "Volume", "WorkingDir"}
_VOLUME_KEYS = {"Copy", "Device", "Driver", "GlobalArgs", "Group", "Label", "Options",
                "PodmanArgs", "ServiceName", "Type", "User", "VolumeName"}
_NETWORK_KEYS = {"DisableDNS", "Driver", "Gateway", "GlobalArgs", "IPAMDriver", "IPRange",
                 "IPv6", "Internal", "Label", "NetworkDeleteOnStop", "NetworkName", "Options",
                 "PodmanArgs", "ServiceName", "Subnet"}
_NO_CGROUPS = "containers run with cgroups disabled on these devices (no resource limits)"
_NEWER = "needs a newer podman than Debian 12's 4.3.1"
# Quadlet keys we know but do not support, and why
_REFUSED = {
    "Container": {
        "Memory": _NO_CGROUPS, "PidsLimit": _NO_CGROUPS, "ContainersConfModule": _NEWER,
        "HealthStartupCmd": _NEWER, "HealthStartupInterval": _NEWER,
        "HealthStartupRetries": _NEWER, "HealthStartupSuccess": _NEWER,
        "HealthStartupTimeout": _NEWER, "HealthLogDestination": _NEWER,
        "HealthMaxLogCount": _NEWER, "HealthMaxLogSize": _NEWER, "Retry": _NEWER,
        "RetryDelay": _NEWER, "Pod": ".pod files are not supported", "StartWithPod":
        ".pod files are not supported", "Mount": "not supported here; use Volume=",
        "RemapUsers": "deprecated in Quadlet; use UserNS=", "RemapUid": "deprecated; use UIDMap=",
        "RemapGid": "deprecated; use GIDMap=", "RemapUidSize": "deprecated; use UserNS=",
        "SecurityLabelDisable": "Debian has no SELinux", "SecurityLabelFileType":
        "Debian has no SELinux", "SecurityLabelLevel": "Debian has no SELinux",
        "SecurityLabelNested": "Debian has no SELinux", "SecurityLabelType":
        "Debian has no SELinux", "AppArmor": "not supported here; use PodmanArgs="},
    "Volume": {"UID": _NEWER, "GID": _NEWER, "Image": _NEWER, "ContainersConfModule": _NEWER},
    "Network": {"DNS": _NEWER, "InterfaceName": _NEWER, "ContainersConfModule": _NEWER},
}
SUPPORTED = {"Container": _CONTAINER_KEYS, "Volume": _VOLUME_KEYS, "Network": _NETWORK_KEYS}
EXTENSIONS = {".volume": ("Volume", "-volume", 2), ".network": ("Network", "-network", 2),
              ".container": ("Container", "", 4)}


class QuadletError(UsageError):
    """A Quadlet file the generator refuses (the message names the file and line)."""


@dataclass
class UnitInfo:
    service_name: str  # without .service
    resource_name: str  # podman's name of the container/volume/network ("" if unknown)

    @property
    def service_file(self) -> str:
        return f"{self.service_name}.service"


def podman_binary() -> str:
    return os.environ.get("PODMAN") or "/usr/bin/podman"


def _base(name: str) -> str:
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def service_name(unit: UnitFile) -> str:
    group, suffix, _ = EXTENSIONS[os.path.splitext(unit.filename)[1]]
    explicit = unit.lookup(group, "ServiceName")
    if explicit is not None:
        return explicit
    base = _base(unit.filename)
    if base.endswith("@"):
        return base[:-1] + suffix + "@"
    return base + suffix


def container_name(unit: UnitFile) -> str:
    name = unit.lookup("Container", "ContainerName")
    if not name:
        name = "systemd-%p_%i" if "@" in unit.filename else "systemd-%N"
    return name


def resource_name(unit: UnitFile, group: str, key: str) -> str:
    name = unit.lookup(group, key)
    if not name:
        name = "systemd-" + _base(unit.filename)
        if "@" in unit.filename:
            name = name[:-1] + "-%i"
    return name


def unit_info(unit: UnitFile) -> UnitInfo:
    ext = os.path.splitext(unit.filename)[1]
    svc = service_name(unit)
    if ext == ".container":
        res = container_name(unit).replace("%N", svc)
        return UnitInfo(svc, "" if "%" in res else res)
    key = "VolumeName" if ext == ".volume" else "NetworkName"
    return UnitInfo(svc, resource_name(unit, EXTENSIONS[ext][0], key))


def _where(unit: UnitFile, group: str, key: str) -> str:
    line = unit.lookup_line(group, key)
    return line.origin if line and line.origin else unit.path or unit.filename


def _fail(unit: UnitFile, group: str, key: str, msg: str, hint: str | None = None) -> QuadletError:
    return QuadletError(f"{_where(unit, group, key)}: {msg}", hint)


def check_keys(unit: UnitFile, group: str) -> None:
    """Every key of ``[group]`` and ``[Quadlet]`` must be one we support (Quadlet's rule)."""
    for line in unit.key_lines(group):
        if line.key in SUPPORTED[group]:
            continue
        why = _REFUSED[group].get(line.key)
        if why:
            raise QuadletError(f"{line.origin}: key '{line.key}' in group '{group}' is not "
                               f"supported by atomicedge: {why}")
        raise QuadletError(f"{line.origin}: unsupported key '{line.key}' in group '{group}'",
                           "see docs/workloads.md for the keys atomicedge's Quadlet supports")
    for line in unit.key_lines("Quadlet"):
        if line.key != "DefaultDependencies":
            raise QuadletError(f"{line.origin}: unsupported key '{line.key}' in group 'Quadlet'",
                               "[Quadlet] only takes DefaultDependencies=")


def _abs_path(unit: UnitFile, path: str) -> str:
    if path.startswith("%") and not path.startswith("%%"):
        return path
    if os.path.isabs(path):
        return path
    base = os.path.dirname(unit.path) if unit.path else os.getcwd()
    return os.path.normpath(os.path.join(base, path))


def _init_service(unit: UnitFile, group: str, units: dict[str, UnitInfo],
                  is_user: bool) -> UnitFile:
    check_keys(unit, group)
    service = unit.dup()
    service.filename = units[unit.filename].service_file
    _translate_dependencies(service, units)
    if unit.lookup_bool("Quadlet", "DefaultDependencies") is not False:
        net = USER_NETWORK_UNIT if is_user else "network-online.target"
        service.prepend("Unit", "After", net)
        service.prepend("Unit", "Wants", net)
    if unit.path:
        service.add("Unit", "SourcePath", unit.path)
    service.add("Unit", "RequiresMountsFor", "%t/containers")
    service.rename_group(group, "X-" + group)
    service.rename_group("Quadlet", "X-Quadlet")
    return service


def _translate_dependencies(service: UnitFile, units: dict[str, UnitInfo]) -> None:
    for key in UNIT_DEPENDENCY_KEYS:
        deps = service.lookup_all_strv("Unit", key)
        if not any(os.path.splitext(d)[1] in EXTENSIONS for d in deps):
            continue
        out = []
        for dep in deps:
            if os.path.splitext(dep)[1] in EXTENSIONS:
                if dep not in units:
                    raise _fail(service, "Unit", key, f"{key}={dep}: no such Quadlet unit",
                                "the referenced file must be in a Quadlet unit directory")
                dep = units[dep].service_file
            out.append(dep)
        service.unset("Unit", key)
        service.add("Unit", key, " ".join(out))


def _depend_on(service: UnitFile, info: UnitInfo) -> None:
    service.add("Unit", "Requires", info.service_file)
    service.add("Unit", "After", info.service_file)


def _podman(unit: UnitFile, group: str) -> list[str]:
    return [podman_binary(), *unit.lookup_all_args(group, "GlobalArgs")]


def _keyvals(flag: str, pairs: dict[str, str | None]) -> list[str]:
    out: list[str] = []
    for k in sorted(pairs):
        v = pairs[k]
        out += [flag, k if v is None else f"{k}={v}"]
    return out


def _bool_flag(flag: str, value: bool) -> str:
    return flag if value else f"{flag}=false"


# -- .container ------------------------------------------------------------------------------

_STRING_FLAGS = (("Timezone", "--tz"), ("ShmSize", "--shm-size"), ("WorkingDir", "--workdir"),
                 ("IP", "--ip"), ("IP6", "--ip6"), ("HostName", "--hostname"),
                 ("StopSignal", "--stop-signal"), ("StopTimeout", "--stop-timeout"),
                 ("Pull", "--pull"))
_ALL_STRING_FLAGS = (("NetworkAlias", "--network-alias"), ("Ulimit", "--ulimit"),
                     ("DNS", "--dns"), ("DNSOption", "--dns-option"),
                     ("DNSSearch", "--dns-search"), ("GroupAdd", "--group-add"),
                     ("AddHost", "--add-host"), ("Tmpfs", "--tmpfs"))
_BOOL_FLAGS = (("RunInit", "--init"), ("EnvironmentHost", "--env-host"),
               ("HttpProxy", "--http-proxy"), ("ReadOnlyTmpfs", "--read-only-tmpfs"))
_HEALTH = (("HealthCmd", "cmd"), ("HealthInterval", "interval"),
           ("HealthOnFailure", "on-failure"), ("HealthRetries", "retries"),
           ("HealthStartPeriod", "start-period"), ("HealthTimeout", "timeout"))


def convert_container(unit: UnitFile, units: dict[str, UnitInfo], is_user: bool) -> UnitFile:
    service = _init_service(unit, "Container", units, is_user)
    image, rootfs = unit.lookup("Container", "Image"), unit.lookup("Container", "Rootfs")
    if not image and not rootfs:
        raise QuadletError(f"{unit.path or unit.filename}: no Image or Rootfs key specified",
                           "add Image=registry.example/app:tag to [Container]")
    if image and rootfs:
        raise _fail(unit, "Container", "Rootfs", "the Image and Rootfs keys conflict")
    if image and image.endswith((".image", ".build")):
        raise _fail(unit, "Container", "Image", f"Image={image}: .image and .build files are "
                    "not supported by atomicedge", "name the image itself (registry/name:tag)")
    name = container_name(unit)
    service.add("Service", "Environment", "PODMAN_SYSTEMD_UNIT=%n")
    kill_mode = service.lookup("Service", "KillMode")
    if kill_mode not in (None, "mixed", "control-group"):
        raise _fail(service, "Service", "KillMode", f"invalid KillMode '{kill_mode}'",
                    "only mixed (the default) and control-group work with conmon")
    if kill_mode is None:
        service.set("Service", "KillMode", "mixed")
    stop = [*_podman(unit, "Container"), "rm", "-v", "-f", "-i", name]
    service.add_cmdline("Service", "ExecStop", stop)
    service.add_cmdline("Service", "ExecStopPost", ["-" + stop[0], *stop[1:]])
    _exec_reload(unit, service, name)
    run = [*_podman(unit, "Container"), "run", "--name", name, "--replace", "--rm"]
    run += _container_flags(unit, service, units)
    run += unit.lookup_all_args("Container", "PodmanArgs")
    run += [image] if image else ["--rootfs", rootfs or ""]
    run += unit.lookup_last_args("Container", "Exec") or []
    service.add_cmdline("Service", "ExecStart", run)
    return service


def _exec_reload(unit: UnitFile, service: UnitFile, name: str) -> None:
    cmd = unit.lookup_last_args("Container", "ReloadCmd") or []
    sig = unit.lookup("Container", "ReloadSignal") or ""
    if cmd and sig:
        raise _fail(unit, "Container", "ReloadSignal",
                    "ReloadCmd and ReloadSignal are mutually exclusive but both are set")
    if cmd:
        service.add_cmdline("Service", "ExecReload",
                            [*_podman(unit, "Container"), "exec", name, *cmd])
    elif sig:
        service.add_cmdline("Service", "ExecReload",
                            [*_podman(unit, "Container"), "kill", "--signal", sig, name])


def _container_flags(unit: UnitFile, service: UnitFile, units: dict[str, UnitInfo]) -> list[str]:
    g = "Container"
    args: list[str] = []
    if (driver := unit.lookup(g, "LogDriver")) is not None:
        args += ["--log-driver", driver]
    for opt in unit.lookup_all_strv(g, "LogOpt"):
        args += ["--log-opt", opt]
    if mode := unit.lookup(g, "CgroupsMode"):
        args += ["--cgroups", mode]
    else:
        args.append("--cgroups=disabled")  # Quadlet: --cgroups=split (see module doc)
    if (entry := unit.lookup(g, "Entrypoint")) is not None:
        args.append(f"--entrypoint={entry}")
    for key, flag in _STRING_FLAGS:
        if value := unit.lookup(g, key):
            args += [flag, value]
    for key, flag in _ALL_STRING_FLAGS:
        for value in unit.lookup_all(g, key):
            args += [flag, value]
    for key, flag in _BOOL_FLAGS:
        if (b := unit.lookup_bool(g, key)) is not None:
            args.append(_bool_flag(flag, b))
    args += _networks(unit, service, units)
    args += _notify(unit, service)
    args += _security_flags(unit)
    args += _user(unit) + _user_maps(unit) + _volumes(unit, service, units)
    if update := unit.lookup(g, "AutoUpdate"):
        args += ["--label", f"{AUTOUPDATE_LABEL}={update}"]
    for port in unit.lookup_all(g, "ExposeHostPort"):
        args += ["--expose", port.strip()]
    for port in unit.lookup_all(g, "PublishPort"):
        args += ["--publish", port]
    args += _keyvals("--env", unit.lookup_all_keyval(g, "Environment"))
    args += _keyvals("--label", unit.lookup_all_keyval(g, "Label"))
    args += _keyvals("--annotation", unit.lookup_all_keyval(g, "Annotation"))
    args += [a for m in unit.lookup_all_args(g, "Mask") for a in ("--security-opt", f"mask={m}")]
    args += [a for m in unit.lookup_all_args(g, "Unmask")
             for a in ("--security-opt", f"unmask={m}")]
    for env_file in unit.lookup_all_args(g, "EnvironmentFile"):
        args += ["--env-file", _abs_path(unit, env_file)]
    args += [a for s in unit.lookup_all_args(g, "Secret") for a in ("--secret", s)]
    for key, name in _HEALTH:
        if value := unit.lookup(g, key):
            args += [f"--health-{name}", value]
    return args


def _security_flags(unit: UnitFile) -> list[str]:
    g, args = "Container", []
    if unit.lookup_bool(g, "NoNewPrivileges"):
        args.append("--security-opt=no-new-privileges")
    for dev in unit.lookup_all_strv(g, "AddDevice"):
        if dev.startswith("-"):
            dev = dev[1:]
            if not os.path.exists(dev.split(":")[0]):
                continue
        args += ["--device", dev]
    if (seccomp := unit.lookup(g, "SeccompProfile")) is not None:
        args += ["--security-opt", f"seccomp={seccomp}"]
    args += [a for cap in unit.lookup_all_strv(g, "DropCapability")
             for a in ("--cap-drop", cap.lower())]
    args += [a for cap in unit.lookup_all_strv(g, "AddCapability")
             for a in ("--cap-add", cap.lower())]
    args += [a for s in unit.lookup_all_strv(g, "Sysctl") for a in ("--sysctl", s)]
    read_only = unit.lookup_bool(g, "ReadOnly")
    if read_only is not None:
        args.append(_bool_flag("--read-only", read_only))
    if unit.lookup_bool(g, "VolatileTmp") and not read_only:
        args += ["--tmpfs", "/tmp:rw,size=512M,mode=1777"]
    return args


def _notify(unit: UnitFile, service: UnitFile) -> list[str]:
    stype = service.lookup("Service", "Type")
    if stype not in (None, "notify", "oneshot"):
        raise _fail(service, "Service", "Type", f"invalid service Type '{stype}'",
                    "a container unit is Type=notify (the default) or Type=oneshot")
    if stype == "oneshot":
        return []
    notify = unit.lookup("Container", "Notify")
    if notify is not None and notify.lower() == "healthy":
        raise _fail(unit, "Container", "Notify", "Notify=healthy " + _NEWER,
                    "use Notify=true with an sd_notify-aware app, or HealthOnFailure=kill")
    service.set("Service", "Type", "notify")
    service.set("Service", "NotifyAccess", "all")
    if not unit.has_key("Service", "SyslogIdentifier"):
        service.set("Service", "SyslogIdentifier", "%N")
    mode = "container" if unit.lookup_bool("Container", "Notify") else "conmon"
    return [f"--sdnotify={mode}", "-d"]


def _networks(unit: UnitFile, service: UnitFile, units: dict[str, UnitInfo]) -> list[str]:
    args: list[str] = []
    for network in unit.lookup_all("Container", "Network"):
        ref, sep, options = network.partition(":")
        if ref.endswith((".network", ".container")):
            info = units.get(ref)
            if info is None:
                raise _fail(unit, "Container", "Network",
                            f"requested Quadlet unit {ref} was not found",
                            "put the file next to this one (or in another Quadlet directory)")
            if not info.resource_name:
                raise _fail(unit, "Container", "Network",
                            f"cannot get the resource name of {ref}")
            _depend_on(service, info)
            if ref.endswith(".container"):
                if sep:
                    raise _fail(unit, "Container", "Network", "extra options are not "
                                "supported when joining another container's network")
                network = f"container:{info.resource_name}"
            else:
                network = info.resource_name + (f":{options}" if sep else "")
        args += ["--network", network]
    return args


def _user(unit: UnitFile) -> list[str]:
    user, group = unit.lookup("Container", "User"), unit.lookup("Container", "Group")
    if not user:
        if group:
            raise _fail(unit, "Container", "Group", "invalid Group set without User",
                        "set User= too (Group= alone has no podman equivalent)")
        return []
    return ["--user", f"{user}:{group}" if group else user]


def _user_maps(unit: UnitFile) -> list[str]:
    g, args = "Container", []
    if userns := unit.lookup(g, "UserNS"):
        args += ["--userns", userns]
    args += [a for m in unit.lookup_all_strv(g, "UIDMap") for a in ("--uidmap", m)]
    args += [a for m in unit.lookup_all_strv(g, "GIDMap") for a in ("--gidmap", m)]
    if sub := unit.lookup(g, "SubUIDMap"):
        args += ["--subuidname", sub]
    if sub := unit.lookup(g, "SubGIDMap"):
        args += ["--subgidname", sub]
    return args


def _volumes(unit: UnitFile, service: UnitFile, units: dict[str, UnitInfo]) -> list[str]:
    args: list[str] = []
    for volume in unit.lookup_all("Container", "Volume"):
        parts = volume.split(":", 2)
        source, dest = (parts[0], parts[1]) if len(parts) >= 2 else ("", parts[0])
        options = ":" + parts[2] if len(parts) == 3 else ""
        if source.startswith("."):
            source = _abs_path(unit, source)
        if source.startswith("/"):
            service.add_escaped("Unit", "RequiresMountsFor", source)
        elif source.endswith(".volume"):
            info = units.get(source)
            if info is None:
                raise _fail(unit, "Container", "Volume",
                            f"requested Quadlet source {source} was not found",
                            "put the .volume file in a Quadlet directory")
            _depend_on(service, info)
            source = info.resource_name
        args += ["-v", f"{source}:{dest}{options}" if source else dest]
    return args


# -- .volume and .network --------------------------------------------------------------------

def _create_if_missing(kind: str, name: str, create: list[str], podman: list[str]) -> list[str]:
    """podman 4.3.1 lacks ``create --ignore``: create only when ``exists`` says it is missing."""
    exists = shlex.join([*podman, kind, "exists", name])
    return ["/bin/sh", "-c", f"{exists} || exec {shlex.join(create)}"]


def _oneshot(service: UnitFile) -> None:
    if not service.has_key("Service", "SyslogIdentifier"):
        service.set("Service", "SyslogIdentifier", "%N")
    if not service.has_key("Service", "Type"):
        service.set("Service", "Type", "oneshot")
    if not service.has_key("Service", "RemainAfterExit"):
        service.set("Service", "RemainAfterExit", "yes")


def _host_id(unit: UnitFile, group: str, key: str) -> int | None:
    """A numeric id, or a user/group name of the system the generator runs on."""
    value = unit.lookup(group, key)
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        pass
    try:
        return pwd.getpwnam(value).pw_uid if key == "User" else grp.getgrnam(value).gr_gid
    except KeyError:
        raise _fail(unit, group, key, f"{key}={value}: no such {key.lower()} on this system",
                    f"{key}= takes a numeric id or an existing name") from None


def convert_volume(unit: UnitFile, units: dict[str, UnitInfo], is_user: bool) -> UnitFile:
    g = "Volume"
    service = _init_service(unit, g, units, is_user)
    name = units[unit.filename].resource_name
    podman = _podman(unit, g)
    args = [*podman, "volume", "create"]
    if (driver := unit.lookup(g, "Driver")) is not None:
        if driver == "image":
            raise _fail(unit, g, "Driver", "Driver=image " + _NEWER,
                        "mount the image's content with a container instead")
        args += ["--driver", driver]
    opts: list[str] = []
    for key, opt in (("User", "uid"), ("Group", "gid")):
        if (num := _host_id(unit, g, key)) is not None:
            opts.append(f"{opt}={num}")
    if (copy := unit.lookup_bool(g, "Copy")) is not None:
        args += ["--opt", "copy" if copy else "nocopy"]
    device = unit.lookup(g, "Device")
    if device:
        args += ["--opt", f"device={device}"]
    if dev_type := unit.lookup(g, "Type"):
        if not device:
            raise _fail(unit, g, "Type", "key Type can't be used without Device")
        args += ["--opt", f"type={dev_type}"]
        if dev_type == "bind":
            service.add_escaped("Unit", "RequiresMountsFor", device or "")
    if mount_opts := unit.lookup(g, "Options"):
        opts.append(mount_opts)
    if opts:
        args += ["--opt", "o=" + ",".join(opts)]
    args += _keyvals("--label", unit.lookup_all_keyval(g, "Label"))
    args += unit.lookup_all_args(g, "PodmanArgs")
    args.append(name)
    service.add_cmdline("Service", "ExecStart", _create_if_missing("volume", name, args, podman))
    _oneshot(service)
    return service


def convert_network(unit: UnitFile, units: dict[str, UnitInfo], is_user: bool) -> UnitFile:
    g = "Network"
    service = _init_service(unit, g, units, is_user)
    name = units[unit.filename].resource_name
    podman = _podman(unit, g)
    if unit.lookup_bool(g, "NetworkDeleteOnStop"):
        service.add_cmdline("Service", "ExecStopPost", [*podman, "network", "rm", name])
    args = [*podman, "network", "create"]
    for key, flag in (("DisableDNS", "--disable-dns"), ("Internal", "--internal"),
                      ("IPv6", "--ipv6")):
        if (b := unit.lookup_bool(g, key)) is not None:
            args.append(_bool_flag(flag, b))
    for key, flag in (("Driver", "--driver"), ("IPAMDriver", "--ipam-driver")):
        if value := unit.lookup(g, key):
            args += [flag, value]
    subnets, gateways = unit.lookup_all(g, "Subnet"), unit.lookup_all(g, "Gateway")
    ranges = unit.lookup_all(g, "IPRange")
    if not subnets and (gateways or ranges):
        raise _fail(unit, g, "Gateway" if gateways else "IPRange",
                    "cannot set gateway or range without subnet")
    if len(gateways) > len(subnets) or len(ranges) > len(subnets):
        raise _fail(unit, g, "Subnet", "cannot set more gateways or ranges than subnets")
    for i, subnet in enumerate(subnets):
        args += ["--subnet", subnet]
        args += ["--gateway", gateways[i]] if i < len(gateways) else []
        args += ["--ip-range", ranges[i]] if i < len(ranges) else []
    args += _keyvals("--opt", unit.lookup_all_keyval(g, "Options"))
    args += _keyvals("--label", unit.lookup_all_keyval(g, "Label"))
    args += unit.lookup_all_args(g, "PodmanArgs")
    args.append(name)
    service.add_cmdline("Service", "ExecStart", _create_if_missing("network", name, args, podman))
    _oneshot(service)
    return service


CONVERTERS = {".container": convert_container, ".volume": convert_volume,
              ".network": convert_network}
