"""The edge-installer ISO: built from the session's composed gateway v1, a site kickstart
embedded with ``mkksiso``, installed unattended under QEMU (TCG) onto an empty disk, which then
boots.

Nothing is faked: the ISO is xorriso's with GRUB's El Torito images, the installer is the
composed commit itself booted from the CD (its kernel, its dracut initramfs, systemd's volatile
overlay) running the image's own device code; the target is an empty qcow2 on virtio. The
kickstart's ``%post`` also installs the command channel of ``atomicedge vm exec`` (the
agent of compose/disk_agent.py) - that is how the checks get into the installed system.
The cheap checks (refusals, the partition table, the plan's digest) need no VM.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from atomicedge.cli.main import main
from atomicedge.compose import disk_agent, installer
from atomicedge.device import installer as dev
from atomicedge.errors import UsageError
from atomicedge.lab import vm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
BOOT_TIMEOUT = 900.0          # TCG on 2 busy cores: a boot is 30-60 s idle, minutes loaded
INSTALL_TIMEOUT = 1800.0
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEdBf3vJq4hXlC5l2Yx1pQ0t8bS7kL9mN3rT6wV2yZ4a "
       "siteadmin@installer-test")
SITE_URL = "http://10.0.2.2:8000/repo/"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def site_kickstart(ref: str) -> str:
    """Seed 000's shape (its layout and console lines are accepted as they are)."""
    return f"""# site kickstart (seed 000 style)
lang en_US.UTF-8
keyboard us
timezone UTC
zerombr
clearpart --all --initlabel
autopart --type=plain --fstype=xfs --nohome
poweroff
text
network --bootproto=dhcp --noipv6
user --name=siteadmin --groups=wheel --password=edge --homedir=/var/home/siteadmin
sshkey --username=siteadmin "{KEY}"
ostreesetup --nogpg --url={SITE_URL} --osname=site --remote=fleet --ref={ref}

%post --log=/root/ks-post.log
echo "installed by the site kickstart" > /etc/ks-post-marker
cat /etc/hostname >> /etc/ks-post-marker
mkdir -p /etc/atomicedge
cat > /etc/atomicedge/vm-agent.py <<'AGENT_EOF'
{disk_agent.AGENT}AGENT_EOF
chmod 700 /etc/atomicedge/vm-agent.py
cat > /etc/systemd/system/{disk_agent.UNIT} <<'UNIT_EOF'
{disk_agent.UNIT_TEXT}UNIT_EOF
systemctl enable {disk_agent.UNIT}
%end
"""


# -- no VM -------------------------------------------------------------------------------------

def test_bad_kickstart_is_refused_with_its_line_and_no_iso_is_written(
        gateway_images: Any, tmp_path: Path) -> None:
    ks = tmp_path / "bad.ks"
    ks.write_text(f"text\nostreesetup --osname=x --url=http://h/ --ref={gateway_images.ref}\n"
                  "%packages\nstrace\n%end\n")
    out = tmp_path / "out" / "installer.iso"
    with pytest.raises(UsageError, match=r"^bad\.ks:3: %packages is not supported"):
        installer.build(installer.InstallerSpec(gateway_images.repo, gateway_images.ref,
                                                gateway_images.v1, out, kickstart=ks))
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_compose_build_refuses_a_bad_kickstart_before_composing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ks = tmp_path / "site.ks"
    ks.write_text("text\nostreesetup --osname=s --url=http://h/ --ref=debian/12/x86_64/edge"
                  " --bogus\n")
    repo, out = tmp_path / "repo", tmp_path / "gw.iso"
    rc = main(["compose", "build", str(EXAMPLES / "gateway-v1.toml"), "--type",
               "edge-installer", "--kickstart", str(ks), "--repo", str(repo), "--output",
               str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: site.ks:2: ostreesetup: option --bogus is not "
                                      "supported") and "Traceback" not in err
    assert not repo.exists() and not out.exists()


def test_changed_ks_cfg_without_mkksiso_is_refused_by_the_installer(tmp_path: Path) -> None:
    """The installer runs the plan the host checked; a ks.cfg edited behind its back would
    silently not be what runs, so it stops before touching any disk."""
    plan = dev.Plan(kickstart_sha256="0" * 64, ref="r", commit="a" * 64, osname="o",
                    remote="e", url="http://h/", gpg=False)
    (tmp_path / "atomicedge").mkdir()
    (tmp_path / dev.PLAN).write_text(plan.to_json())
    (tmp_path / dev.KICKSTART).write_text("ostreesetup --osname=o --url=http://h/ --ref=r\n")
    with pytest.raises(dev.InstallError, match="differs from the kickstart checked"):
        dev.load_plan(tmp_path)


def test_the_installer_writes_the_disk_builders_partition_table(tmp_path: Path) -> None:
    size = 3 << 30
    img = tmp_path / "t.img"
    with open(img, "wb") as f:
        f.truncate(size)
        f.write(dev.mbr(b"\xeb\x63" + bytes(438), size // 512, 0x1234abcd))
    table = json.loads(subprocess.run(["sfdisk", "--json", str(img)], check=True, text=True,
                                      capture_output=True).stdout)["partitiontable"]
    assert table["label"] == "dos"
    p1, p2 = table["partitions"]
    assert (p1["start"], p1["size"], p1["type"]) == (dev.ESP_START, dev.ESP_SECTORS, "ef")
    assert (p2["start"], p2["size"], p2["type"]) == (dev.ROOT_START,
                                                      size // 512 - dev.ROOT_START, "83")
    assert p2.get("bootable") and not p1.get("bootable")


def test_kickstart_accounts_and_post_land_in_the_deployed_system(
        gateway_images: Any, tmp_path: Path) -> None:
    """The installer's accounts and %post phase, on the host, against a sysroot deployed by
    the same install_sysroot (a real deployment, real useradd, a real chroot; no VM): homes
    and --log go through /home and /root into the stateroot's fresh /var."""
    from atomicedge.compose import kickstart
    from atomicedge.ostree.repo import Repo
    text = (f"ostreesetup --osname=site --remote=fleet --url={SITE_URL} "
            f"--ref={gateway_images.ref}\nuser --name=op --groups=wheel --password=edge\n"
            f'sshkey --username=op "{KEY}"\nrootpw --lock\n'
            "%post --log=/root/ks-post.log\ncat /etc/hostname > /etc/ks-post-marker\n"
            "echo done\n%end\n")
    meta = installer.iso_meta(Repo.open(gateway_images.repo), gateway_images.ref,
                              gateway_images.v1)
    plan = installer.make_plan(kickstart.parse(text), text, meta)
    root = tmp_path / "sysroot"
    deployment = dev.install_sysroot(root, f"file://{gateway_images.repo}", gateway_images.ref,
                                     gateway_images.v1, "site", "fleet", list(dev.BASE_KARGS),
                                     SITE_URL)
    var = root / "ostree/deploy/site/var"
    with dev.mounted(dev.chroot_mounts(root, deployment, var)):
        dev.apply_accounts(deployment, plan)
        dev.run_posts(deployment, plan.posts)
    assert not any(p.is_mount() for p in (deployment / "proc", deployment / "var"))
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (deployment / "etc/passwd").read_text()
              .splitlines()}
    assert passwd["op"][5] == "/home/op" and (var / "home/op").is_dir()
    assert (var / "home/op/.ssh/authorized_keys").read_text() == KEY + "\n"
    assert "op" in (deployment / "etc/group").read_text().split("wheel:")[1].split("\n")[0]
    shadow = {ln.split(":")[0]: ln.split(":")[1] for ln in (deployment / "etc/shadow")
              .read_text().splitlines()}
    assert shadow["op"].startswith("$6$") and shadow["root"].startswith("!")
    assert (deployment / "etc/ks-post-marker").read_text() == "gateway\n"
    assert (var / "roothome/ks-post.log").read_text() == "done\n"


# -- the ISOs ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def iso(gateway_images: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("iso") / "gateway-installer.iso"
    start = time.monotonic()
    installer.build(installer.InstallerSpec(gateway_images.repo, gateway_images.ref,
                                            gateway_images.v1, out))
    print(f"\nISO built in {time.monotonic() - start:.1f} s, {out.stat().st_size >> 20} MiB")
    return out


@pytest.fixture(scope="module")
def site_iso(iso: Path, gateway_images: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("site")
    ks = d / "site.ks"
    ks.write_text(site_kickstart(gateway_images.ref))
    start = time.monotonic()
    assert main(["mkksiso", str(ks), str(iso), str(d / "site.iso")]) == 0
    print(f"\nmkksiso in {time.monotonic() - start:.1f} s")
    return d / "site.iso"


def test_the_iso_carries_its_kickstart_and_mkksiso_replaces_it(
        iso: Path, site_iso: Path, gateway_images: Any) -> None:
    text, plan = installer.carried(iso)
    assert f"--ref={gateway_images.ref} --nogpg" in text
    assert (plan.osname, plan.remote, plan.commit, plan.users) == ("debian", "edge",
                                                                   gateway_images.v1, [])
    text, plan = installer.carried(site_iso)
    assert text == site_kickstart(gateway_images.ref)
    assert (plan.osname, plan.remote, plan.url, plan.gpg, plan.erase) == (
        "site", "fleet", SITE_URL, False, True)
    assert [u["name"] for u in plan.users] == ["siteadmin"]
    assert plan.users[0]["passwordHash"].startswith("$6$")       # hashed on the host
    assert plan.sshkeys == [("siteadmin", KEY)] and len(plan.posts) == 1
    assert installer.carried(iso)[1].osname == "debian"          # the input ISO is unchanged


def test_mkksiso_refuses_a_bad_kickstart_with_its_line_and_writes_nothing(
        iso: Path, gateway_images: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ks"
    bad.write_text(f"ostreesetup --osname=s --url=http://h/ --ref={gateway_images.ref}\n"
                   "user --name=a\npart / --size=100\n")
    other = tmp_path / "other.ks"
    other.write_text("text\nostreesetup --osname=s --url=http://h/ --ref=debian/12/x/other\n")
    for ks, message in ((bad, "bad.ks:3: command 'part' is not supported"),
                        (other, "other.ks:2: ostreesetup --ref=debian/12/x/other: this "
                                "installer carries")):
        out = tmp_path / f"{ks.stem}.iso"
        assert main(["mkksiso", str(ks), str(iso), str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and "Traceback" not in err
        assert not out.exists() and not list(tmp_path.glob(".*.tmp-*"))


# -- install and boot --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def installed(site_iso: Path, vm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("target") / "target.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), "8G"], check=True,
                   timeout=60)
    start = time.monotonic()
    vm.run(vm.VmSpec("inst", target, cdrom=site_iso), detach=True)
    vm.wait_console("inst", r"INSTALL (OK|FAILED)", timeout=INSTALL_TIMEOUT)
    console = vm.console_path("inst").read_text(errors="replace")
    assert "INSTALL OK" in console, console[-3000:]
    vm.wait_exit("inst", BOOT_TIMEOUT)          # the kickstart's poweroff
    print(f"\ninstall: QEMU start -> powered off {time.monotonic() - start:.1f} s")
    (target.parent / "install-console.log").write_text(console)
    return target


@pytest.fixture(scope="module")
def booted(installed: Path, vm_dir: Path) -> str:
    start = time.monotonic()
    vm.run(vm.VmSpec("inst", installed), detach=True)
    vm.wait_agent("inst", BOOT_TIMEOUT)
    print(f"\ninstalled disk: QEMU start -> agent answers {time.monotonic() - start:.1f} s")
    return "inst"


def sh(cmd: str) -> str:
    res = vm.exec_("inst", cmd, timeout=300)
    assert res.rc == 0, (cmd, res.rc, res.text, res.err.decode(errors="replace"))
    return res.text


def test_the_installer_ran_unattended_from_the_cd_and_powered_off(installed: Path) -> None:
    console = (installed.parent / "install-console.log").read_text()
    assert "atomicedge-installer-grub: loading the installer" in console   # the ISO's GRUB
    assert "ostreesetup --osname=site --remote=fleet" in console           # mkksiso's kickstart
    assert "%post (kickstart line 15)" in console
    assert not vm.is_running("inst")


def test_the_installed_disk_boots_the_embedded_commit_as_ostreesetup_said(
        booted: str, gateway_images: Any) -> None:
    st = json.loads(sh("atomicedge device status --json"))
    me = [d for d in st["deployments"] if d["booted"]]
    assert len(me) == 1 and me[0]["checksum"] == gateway_images.v1
    assert (me[0]["osname"], me[0]["origin"]) == ("site", f"fleet:{gateway_images.ref}")
    config = sh("cat /sysroot/ostree/repo/config")
    assert f'[remote "fleet"]\nurl={SITE_URL}\ngpg-verify=false' in config
    assert "atomicedge-grub: booting entry 0" in vm.console_path("inst").read_text(
        errors="replace")                                     # the installed GRUB menu
    assert "ro" in sh("findmnt -no OPTIONS /usr").split(",")


def test_the_kickstart_user_key_and_post_are_on_the_installed_system(booted: str) -> None:
    assert sh("getent passwd siteadmin").split(":")[5] == "/var/home/siteadmin"
    assert "wheel" in sh("id -nG siteadmin").split()
    assert "(ALL : ALL) ALL" in sh("sudo -l -U siteadmin")
    assert sh("cat /var/home/siteadmin/.ssh/authorized_keys") == KEY + "\n"
    assert sh("stat -c '%U %a' /var/home/siteadmin/.ssh/authorized_keys").split() == [
        "siteadmin", "600"]
    shadow = sh("getent shadow siteadmin").split(":")[1]
    assert shadow.startswith("$"), shadow                 # a hash, not a locked account
    # the guest's libcrypt verifies the kickstart's password (the hash via a quoted
    # here-document: its $ signs must not reach the shell)
    check = "import crypt, sys; h = sys.stdin.read().strip(); print(crypt.crypt('edge', h) == h)"
    assert sh(f"python3 -W ignore -c \"{check}\" <<'EOF'\n{shadow}\nEOF").strip() == "True"
    assert sh("cat /etc/ks-post-marker") == "installed by the site kickstart\ngateway\n"
    assert "Created symlink" in sh("cat /root/ks-post.log")   # %post --log, in the chroot


def test_the_iso_boots_with_uefi_into_the_installer(iso: Path, vm_dir: Path,
                                                   tmp_path: Path) -> None:
    """OVMF: El Torito's EFI image, GRUB EFI finds the ISO by label, the installer starts."""
    vm.kill("inst")                   # done with the installed disk: the cores are this VM's
    target = tmp_path / "uefi-target.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), "4G"], check=True,
                   timeout=60)
    start = time.monotonic()
    vm.run(vm.VmSpec("inst-uefi", target, cdrom=iso, uefi=True), detach=True)
    try:
        vm.wait_console("inst-uefi", "atomicedge-installer-grub: loading the installer",
                        timeout=BOOT_TIMEOUT)
        vm.wait_console("inst-uefi", "atomicedge-installer: kickstart checked",
                        timeout=BOOT_TIMEOUT)
        print(f"\nUEFI: QEMU start -> installer running {time.monotonic() - start:.1f} s")
    finally:
        vm.kill("inst-uefi")
