"""aq ssh checks the guest against the host key recorded the first time, not a fresh read."""

from __future__ import annotations

from aq import paths, ssh, sshkeys

RECORDED = "ssh-ed25519 AAAArecorded root@old"


def _offline(monkeypatch, tmp_path):
    key = tmp_path / "id_ed25519"
    paths.public_key(key).write_text("ssh-ed25519 AAAAaq aq\n")
    monkeypatch.setattr(sshkeys, "aq_key", lambda: key)
    monkeypatch.setattr(ssh, "authorize", lambda files, public: None)
    reads = []

    def read_host_key(files):
        reads.append(files)
        return "ssh-ed25519 AAAAfresh root@new"

    monkeypatch.setattr(ssh, "read_host_key", read_host_key)
    files = paths.VmFiles(tmp_path / "vm")
    files.root.mkdir()
    return files, reads


def test_a_recorded_key_is_used_and_not_read_again(monkeypatch, tmp_path) -> None:
    files, reads = _offline(monkeypatch, tmp_path)
    _, host_key = ssh.prepare(files, "web", RECORDED)
    assert host_key == RECORDED and reads == []
    assert files.known_hosts.read_text() == "aq-web ssh-ed25519 AAAArecorded\n"


def test_the_first_ssh_reads_the_key_over_the_channel(monkeypatch, tmp_path) -> None:
    files, reads = _offline(monkeypatch, tmp_path)
    _, host_key = ssh.prepare(files, "web", None)
    assert host_key == "ssh-ed25519 AAAAfresh root@new" and len(reads) == 1
    assert files.known_hosts.read_text() == "aq-web ssh-ed25519 AAAAfresh\n"
