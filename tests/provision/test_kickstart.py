"""Kickstart parsing for the edge installer: the seed's file understood, everything else
refused with its line number (nothing an install would silently skip)."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomicedge.compose import kickstart
from atomicedge.errors import UsageError

DATA = Path(__file__).parent / "data"
OSTREE = "ostreesetup --osname=edge --url=http://127.0.0.1:8000/repo --ref=edge/x\n"


def test_seed_kickstart_is_understood() -> None:
    ks = kickstart.parse_file(DATA / "edge.ks")
    assert ks.ostree == kickstart.OstreeSetup("rhel", "http://${HOSTIP}:8000/repo/",
                                              "rhel/8/x86_64/edge", "edge", gpg=False)
    assert ks.users == [kickstart.User("core", ("wheel",), "edge", homedir="/var/home/core")]
    assert ks.sshkeys == [("core", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKickstartTestKey "
                                   "core@example")]
    assert ks.finish == "poweroff"
    (post,) = ks.posts
    assert post.line == 35 and post.log == "/var/log/ks-post.log"
    assert post.body.startswith("cat << EOF > /etc/systemd/system/enable-vrrp-protocol")
    assert post.body.endswith("systemctl enable enable-vrrp-protocol.service\n")
    assert "EOF\n" in post.body  # the heredoc's own end marker is the script's, not %end
    assert [a.split(":")[0] for a in ks.accepted] == ["3", "4", "5", "8", "11", "14", "20",
                                                      "23"]


def test_rootpw_crypted_user_options_and_remote_defaulting_to_osname() -> None:
    ks = kickstart.parse("rootpw --iscrypted $6$salt$hash\n"
                         "user --name admin --uid=1500 --shell=/bin/bash --lock\n"
                         "ostreesetup --osname=edge --url=file:///srv/repo --ref=edge/x\n"
                         "reboot\n")
    assert ks.rootpw == kickstart.User("root", password="$6$salt$hash", iscrypted=True)
    assert ks.users[0].uid == 1500 and ks.users[0].lock and ks.users[0].shell == "/bin/bash"
    assert ks.ostree.remote == "edge" and ks.ostree.gpg and ks.finish == "reboot"


@pytest.mark.parametrize(("text", "line", "what"), [
    (OSTREE + "%packages\nvim\n%end\n", 2, "%packages is not supported"),
    (OSTREE + "part / --size=100\n", 2, "command 'part' is not supported"),
    (OSTREE + "%pre\necho\n%end\n", 2, "%pre is not supported"),
    (OSTREE + "%include /tmp/x.ks\n", 2, "%include is not supported"),
    (OSTREE + "user --name=a --bogus\n", 2, "option --bogus is not supported"),
    (OSTREE + "%post\necho unterminated\n", 2, "%post has no %end"),
    (OSTREE + "%post --nochroot\ntrue\n%end\n", 2, "--nochroot is not supported"),
    (OSTREE + OSTREE, 2, "ostreesetup is given twice"),
    ("user --name=a\n", 1, "no ostreesetup line"),
    ("ostreesetup --osname=e --url=ftp://h/r --ref=x\n", 1, "is not http(s):// or file://"),
    ("ostreesetup --osname=e --url=http://h/r\n", 1, "--ref= is required"),
    (OSTREE + 'sshkey --username=nobody "ssh-ed25519 AAAA x"\n', 2, "user 'nobody' is not"),
    (OSTREE + "user --name='unterminated\n", 2, "cannot split the line"),
    (OSTREE + "clearpart --drives=sda\n", 2, "clearpart: option --drives is not supported"),
])
def test_unsupported_lines_are_refused_with_their_number(text: str, line: int,
                                                          what: str) -> None:
    with pytest.raises(UsageError) as err:
        kickstart.parse(text, "ks.cfg")
    assert str(err.value).startswith(f"ks.cfg:{line}: ") and what in str(err.value)
    assert err.value.hint
