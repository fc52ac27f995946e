"""Issue 6, end to end on one shared running VM: aq exec, aq console (pty and telnet),
aq cp, and aq ssh's key and host-key handling."""

from __future__ import annotations

import hashlib
import os
import pty
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import REPO

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


def test_exit_codes_and_separate_streams(installed, shared_vm) -> None:
    for code in (0, 1, 42):
        result = installed.sh(
            shared_vm,
            f"echo out; echo err >&2; exit {code}",
            check=False,
        )
        assert result.returncode == code
        assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_arguments_arrive_exactly(installed, shared_vm) -> None:
    args = ["a b", "it's", '"q"', "$HOME", "`id`", "new\nline", "ünïcødé ☃", "", "*", "\\"]
    out = installed.aq("exec", shared_vm, "--", "printf", "[%s]", *args).stdout
    assert out == "".join(f"[{a}]" for a in args)
    # A line longer than the agent reads with `read` goes through dd instead.
    long = ["x" * 20000 + "\n'y", "z"]
    out = installed.aq("exec", shared_vm, "--", "printf", "[%s]", *long).stdout
    assert out == "".join(f"[{a}]" for a in long)


def test_the_command_runs_as_sh_c_would_run_it(installed, shared_vm) -> None:
    # The agent's armed shell runs the quoted words itself instead of starting
    # `sh -c LINE`: the outcome must not tell the two apart.
    for argv in (["no-such-program", "x"], ["cd", "/no/such/dir"], ["/etc/passwd"]):
        ours = installed.aq("exec", shared_vm, "--", *argv, check=False)
        line = " ".join(shlex.quote(arg) for arg in argv)
        theirs = installed.sh(shared_vm, f"sh -c {shlex.quote(line)}", check=False)
        assert ours.returncode == theirs.returncode != 0
        assert ours.stderr == theirs.stderr
        assert ours.stderr.startswith("sh: ")
    # A program takes the shell's place: it leads the process group that Ctrl-C and
    # `aq exec --timeout` signal. And the shell's own variable is not the command's.
    script = 'read -r _ _ _ _ group _ </proc/$$/stat; [ "$$" = "$group" ] && echo leader'
    assert installed.sh(shared_vm, script).stdout == "leader\n"
    assert not any(
        v.startswith("cmd=")
        for v in installed.aq("exec", shared_vm, "--", "set").stdout.splitlines()
    )


def test_script_on_stdin(installed, shared_vm) -> None:
    script = "x=41\necho $((x + 1))\necho done >&2\nexit 3\n"
    result = installed.aq("exec", shared_vm, "--", "sh", "-s", input=script, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "42\n", "done\n")


def test_binary_100mb_round_trip(installed, shared_vm, tmp_path) -> None:
    data = tmp_path / "random.bin"
    with data.open("wb") as out:
        for _ in range(100):
            out.write(os.urandom(1 << 20))
    expected = hashlib.sha256(data.read_bytes()).hexdigest()
    with data.open("rb") as source:
        proc = installed.popen(
            "exec",
            shared_vm,
            "--",
            "cat",
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        digest = hashlib.sha256()
        size = 0
        while block := proc.stdout.read(1 << 20):
            digest.update(block)
            size += len(block)
        assert proc.wait(timeout=600) == 0, proc.stderr.read()
    assert size == 100 << 20
    assert digest.hexdigest() == expected
    nul = installed.aq(
        "exec", shared_vm, "--", "printf", "a\\000b\\377", check=True, text=False
    ).stdout
    assert nul == b"a\x00b\xff"


def test_output_streams_as_it_comes(installed, shared_vm) -> None:
    proc = installed.popen_sh(
        shared_vm,
        "echo first; sleep 5; echo second",
        stdout=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    assert proc.stdout.readline() == "first\n"
    assert time.monotonic() - start < 4.5  # before the command ended
    assert proc.stdout.readline() == "second\n"
    assert proc.wait(timeout=60) == 0


def test_eight_concurrent_execs_keep_their_own_output(installed, shared_vm) -> None:
    procs = {
        i: installed.popen_sh(
            shared_vm,
            f"for j in 1 2 3 4 5; do echo job{i}-$j; echo err{i}-$j >&2; sleep 0.1; done; exit {i}",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(1, 9)
    }
    for i, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == i
        assert out == "".join(f"job{i}-{j}\n" for j in range(1, 6))
        assert err == "".join(f"err{i}-{j}\n" for j in range(1, 6))


def test_a_daemon_left_behind_does_not_take_its_slot_down(installed, shared_vm) -> None:
    # A command that leaves a process running in the background (its output sent
    # elsewhere) used to hand it the slot's ports, and that slot's next session then
    # hung for two minutes. Eight execs at once use every slot, that one included.
    installed.sh(shared_vm, "setsid sleep 600 >/dev/null 2>&1 </dev/null &")
    try:
        procs = [
            installed.popen_sh(shared_vm, f"echo slot-check-{i}", stdout=subprocess.PIPE, text=True)
            for i in range(8)
        ]
        outs = sorted(p.communicate(timeout=90)[0] for p in procs)
        assert outs == sorted(f"slot-check-{i}\n" for i in range(8))
    finally:
        installed.sh(shared_vm, "pkill -x sleep", check=False)


def test_a_process_left_holding_the_output_does_not_stall_its_slot(installed, shared_vm) -> None:
    # Every slot but 0 is held here, so both execs below use slot 0. The first leaves a
    # process, in a session of its own, holding its stdout, and its aq is killed: the
    # agent stops what it can, and the slot's next session must not wait for that
    # process (the agent keeps a slot's FIFOs between sessions, but not after this).
    import fcntl

    folder = installed.path / "vms" / shared_vm
    held = []
    try:
        for number in range(1, 8):
            fd = os.open(folder / f"exec{number}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            held.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        proc = installed.popen_sh(
            shared_vm, "setsid sleep 300 & echo started", stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline() == "started\n"
        proc.kill()
        proc.wait(30)
        start = time.monotonic()
        assert installed.aq("exec", shared_vm, "--", "echo", "next", timeout=60).stdout == "next\n"
        assert time.monotonic() - start < 30
    finally:
        for fd in held:
            os.close(fd)
        installed.sh(shared_vm, "pkill -x sleep", check=False)


def test_the_agents_work_folders_deleted_under_it(installed, shared_vm) -> None:
    # A command that cleans /tmp deletes the folders of every armed slot, its own
    # included: its result still comes back, and every slot answers again afterwards.
    from aq import paths
    from aq.guest import channel

    done = installed.sh(shared_vm, "rm -rf /tmp/aq-exec.*; echo cleaned")
    assert done.stdout == "cleaned\n"
    procs = [
        installed.popen_sh(shared_vm, f"sleep 1; echo again-{i}", stdout=subprocess.PIPE, text=True)
        for i in range(8)
    ]
    outs = sorted(p.communicate(timeout=120)[0] for p in procs)
    assert outs == sorted(f"again-{i}\n" for i in range(8))
    files = paths.VmFiles(installed.path / "vms" / shared_vm)
    assert all(channel.ping(files, timeout=30, slot_number=n) for n in range(channel.SLOTS))


def test_ctrl_c_stops_the_guest_command(installed, shared_vm) -> None:
    proc = installed.popen(
        "exec", shared_vm, "--", "sleep", "300", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    left = installed.aq("exec", shared_vm, "--", "pgrep", "-x", "sleep", check=False)
    assert left.stdout.strip() == ""


def test_output_a_reader_leaves_or_a_disk_refuses(installed, shared_vm, tmp_path) -> None:
    # `aq exec VM -- CMD | head -1`: aq ends by SIGPIPE with nothing on stderr, as
    # `cat` would, and the guest's command is stopped rather than left writing.
    with (tmp_path / "err").open("w+") as err:
        proc = installed.popen(
            "exec", shared_vm, "--", "yes", "aq-reader-gone", stdout=subprocess.PIPE, stderr=err
        )
        assert proc.stdout.readline() == b"aq-reader-gone\n"
        proc.stdout.close()
        assert proc.wait(timeout=60) == -signal.SIGPIPE
        err.seek(0)
        assert err.read() == ""
    deadline = time.monotonic() + 30
    while installed.aq("exec", shared_vm, "--", "pgrep", "-x", "yes", check=False).stdout:
        assert time.monotonic() < deadline, "the guest's command kept running"
        time.sleep(0.5)
    # Output that cannot be written at all (a full disk) is aq's one error line.
    with open("/dev/full", "wb") as full:
        proc = installed.popen(
            "exec", shared_vm, "--", "echo", "hi", stdout=full, stderr=subprocess.PIPE
        )
        _, err_text = proc.communicate(timeout=60)
    assert proc.returncode == 255
    assert err_text.decode().startswith("Error: cannot write the output: No space left on device.")
    # Nor be given at all (`>&-`).
    proc = subprocess.Popen(
        [sys.executable, "-m", "aq", "exec", shared_vm, "--", "echo", "hi"],
        env=installed.full_env(),
        cwd=REPO,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),
    )
    _, err_text = proc.communicate(timeout=60)
    assert proc.returncode == 255
    assert err_text.decode().startswith("Error: cannot write the output: stdout is closed.")


def test_timeout_bounds_a_hanging_command(installed, shared_vm) -> None:
    start = time.monotonic()
    result = installed.aq("exec", "--timeout", "3", shared_vm, "--", "sleep", "300", check=False)
    assert result.returncode == 124
    assert time.monotonic() - start < 60


def test_exec_on_a_stopped_vm_is_a_clear_error(installed) -> None:
    installed.aq("new", "idle", "--cpus", "1")
    try:
        result = installed.aq("exec", "idle", "--", "true", check=False)
        assert result.returncode == 255
        assert "it is created" in result.stderr and "aq start idle" in result.stderr
    finally:
        installed.aq("rm", "idle")


def test_the_running_vms_sockets_and_logs_are_owner_only(installed, shared_vm) -> None:
    folder = installed.path / "vms" / shared_vm
    names = {entry.name: stat.S_IMODE(entry.lstat().st_mode) for entry in folder.iterdir()}
    assert {"qmp.sock", "console.sock", "exec0.ctl.sock", "console.log", "qemu.stderr"} <= set(
        names
    )
    assert {name: mode for name, mode in names.items() if mode & 0o077} == {}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_cp_copies_files_and_folders_never_a_fifo_or_device(installed, shared_vm, tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = installed.aq("cp", f"{shared_vm}:/etc/hostname", str(fifo), check=False)
    assert done.returncode == 2
    assert "is a device, FIFO or socket" in done.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
    # Nor copies a node instead of content, either way.
    done = installed.aq("cp", f"{shared_vm}:/dev/null", str(tmp_path / "x"), check=False)
    assert done.returncode == 2 and "is a device, FIFO or socket in the VM" in done.stderr
    done = installed.aq("cp", str(fifo), f"{shared_vm}:/tmp/aq-fifo", check=False)
    assert done.returncode == 2 and "is a device, FIFO or socket" in done.stderr
    assert installed.sh(shared_vm, "[ -e /tmp/aq-fifo ]", check=False).returncode == 1
    (tmp_path / "null").write_text("hi\n")
    for dest in ("/dev", "/dev/null"):
        done = installed.aq("cp", str(tmp_path / "null"), f"{shared_vm}:{dest}", check=False)
        assert done.returncode == 2 and "/dev/null in the VM is a device" in done.stderr
    assert installed.sh(shared_vm, "[ -c /dev/null ]", check=False).returncode == 0
    (tmp_path / "null").unlink()
    # Merging a folder into one that holds a FIFO where a file would land: refused whole.
    (tmp_path / "merge" / "apk").mkdir(parents=True)
    os.mkfifo(tmp_path / "merge" / "apk" / "world")
    done = installed.aq("cp", "-r", f"{shared_vm}:/etc/apk", str(tmp_path / "merge"), check=False)
    assert done.returncode == 1 and "FIFO or socket, which the copy" in done.stderr
    assert [p.name for p in (tmp_path / "merge" / "apk").iterdir()] == ["world"]
    assert stat.S_ISFIFO((tmp_path / "merge" / "apk" / "world").lstat().st_mode)
    shutil.rmtree(tmp_path / "merge")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_cp_round_trips_a_tree_with_modes(installed, shared_vm, tmp_path) -> None:
    src = tmp_path / "tree"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "secret").write_bytes(os.urandom(4096))
    (src / "secret").chmod(0o600)
    (src / "sub" / "deeper" / "note.txt").write_text("ünïcødé\n")
    (src / "sub").chmod(0o750)
    installed.aq("cp", "-r", str(src), f"{shared_vm}:/root/copied")
    listing = installed.sh(shared_vm, "cd /root/copied && stat -c '%n %a' run.sh secret sub").stdout
    assert listing.split() == ["run.sh", "755", "secret", "600", "sub", "750"]
    back = tmp_path / "back"
    installed.aq("cp", "-r", f"{shared_vm}:/root/copied", str(back))
    for path in src.rglob("*"):
        twin = back / path.relative_to(src)
        assert stat.S_IMODE(twin.stat().st_mode) == stat.S_IMODE(path.stat().st_mode), path
        if path.is_file():
            assert twin.read_bytes() == path.read_bytes()
    single = tmp_path / "os-release"
    installed.aq("cp", f"{shared_vm}:/etc/os-release", str(single))  # a symlink in Alpine
    assert "Alpine" in single.read_text() and not single.is_symlink()
    link = tmp_path / "link"
    link.symlink_to(src / "run.sh")
    installed.aq("cp", str(link), f"{shared_vm}:/root/linked")
    assert (
        installed.aq("exec", shared_vm, "--", "cat", "/root/linked").stdout
        == "#!/bin/sh\necho hi\n"
    )
    missing = installed.aq("cp", f"{shared_vm}:/no/such/file", str(tmp_path), check=False)
    assert missing.returncode == 3 and "does not exist in the VM" in missing.stderr
    refused = installed.aq("cp", str(src), f"{shared_vm}:/root/x", check=False)
    assert refused.returncode == 2 and "-r" in refused.stderr


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"did not see {needle!r}; got {seen[-400:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_console_through_a_pty_while_an_exec_runs(installed, shared_vm) -> None:
    busy = installed.popen_sh(
        shared_vm,
        "sleep 8; echo exec-done",
        stdout=subprocess.PIPE,
        text=True,
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: aq console on a real terminal
        os.environ.update(installed.env)
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "aq", "console", shared_vm])
    try:
        _read_until(fd, b"Detach with", 30)
        os.write(fd, b"\r")
        _read_until(fd, b"login:", 60)
        os.write(fd, b"root\r")
        _read_until(fd, b"# ", 60)
        os.write(fd, b"echo con$((40+2))sole\r")
        _read_until(fd, b"con42sole", 60)
        os.write(fd, b"exit\r")
        os.write(fd, b"\x1d")  # Ctrl-]
        tail = _read_until(fd, b"detached", 30)
        assert b"detached" in tail
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert busy.communicate(timeout=120)[0] == "exec-done\n"


def test_console_over_telnet_while_an_exec_runs(installed, shared_vm) -> None:
    server = installed.popen(
        "console", shared_vm, "--telnet", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("telnet 127.0.0.1 ")
        port = int(line.split()[-1])
        busy = installed.popen_sh(
            shared_vm,
            "sleep 5; echo exec-done",
            stdout=subprocess.PIPE,
            text=True,
        )
        with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
            negotiation = client.recv(9)
            assert negotiation[:3] == bytes([255, 251, 1])  # IAC WILL ECHO
            client.sendall(bytes([255, 253, 1]) + b"\r\n")  # IAC DO ECHO, then Enter
            _read_until(client.fileno(), b"login:", 60)
            client.sendall(b"root\r\n")
            _read_until(client.fileno(), b"# ", 60)
            client.sendall(b"echo tel$((6*7))net\r\n")
            _read_until(client.fileno(), b"tel42net", 60)
            client.sendall(b"exit\r\n")
        assert busy.communicate(timeout=120)[0] == "exec-done\n"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def test_console_refuses_a_second_attacher(installed, shared_vm) -> None:
    server = installed.popen(
        "console", shared_vm, "--telnet", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout.readline().startswith("telnet ")
        second = installed.aq("console", shared_vm, check=False)
        assert second.returncode == 4 and "in use by pid" in second.stderr
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def test_ssh_records_the_guest_host_key_and_checks_it(installed, shared_vm, tmp_path) -> None:
    # The test guest has no sshd; give it a host key so aq's handling can be shown.
    key = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = key.with_suffix(".pub").read_text().strip()
    installed.sh(
        shared_vm,
        "mkdir -p /etc/ssh && cat > /etc/ssh/ssh_host_ed25519_key.pub",
        input=public + "\n",
    )
    result = installed.aq("ssh", "--dry-run", shared_vm, "--", "uname", "-a")
    argv = result.stdout.split()
    status = installed.json("status", shared_vm)
    assert argv[argv.index("-p") + 1] == str(status["ssh_port"])
    assert "StrictHostKeyChecking=yes" in argv and f"HostKeyAlias=aq-{shared_vm}" in argv
    assert argv[-3:] == ["--", "uname", "-a"]
    known = Path(argv[argv.index("-o", argv.index("IdentitiesOnly=yes")) + 1].split("=", 1)[1])
    assert known.read_text() == f"aq-{shared_vm} {' '.join(public.split()[:2])}\n"
    assert status["ssh_host_key"] == public
    aq_pub = (installed.path / "keys" / "id_ed25519.pub").read_text().strip()
    authorized = installed.aq("exec", shared_vm, "--", "cat", "/root/.ssh/authorized_keys").stdout
    assert aq_pub in authorized.splitlines()
    installed.aq("ssh", "--dry-run", shared_vm)  # idempotent: the key is not added twice
    again = installed.aq("exec", shared_vm, "--", "cat", "/root/.ssh/authorized_keys").stdout
    assert again.splitlines().count(aq_pub) == 1


@pytest.mark.skipif(not os.environ.get("AQ_TEST_MIRROR"), reason="the test guest has no sshd")
def test_ssh_end_to_end_against_real_alpine(installed, shared_vm) -> None:
    result = installed.aq("ssh", shared_vm, "--", "cat", "/etc/alpine-release")
    assert result.stdout.strip().count(".") == 2


def _crafted_archive(top: str, host_file: Path) -> bytes:
    """A tar a hostile guest might send: a hard link to a host file, then a regular
    file of the same name (writing through the link would change the host file)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        folder = tarfile.TarInfo(top)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        link = tarfile.TarInfo(f"{top}/h")
        link.type, link.linkname = tarfile.LNKTYPE, str(host_file)
        tar.addfile(link)
        data = b"owned by the guest\n"
        payload = tarfile.TarInfo(f"{top}/h")
        payload.size, payload.mode = len(data), 0o4777
        tar.addfile(payload, io.BytesIO(data))
    return buffer.getvalue()


def test_cp_from_a_guest_whose_tar_is_hostile_changes_nothing(
    installed, shared_vm, tmp_path
) -> None:
    import base64

    outside = tmp_path / "host"
    outside.mkdir()
    sentinel = outside / "sentinel"
    sentinel.write_text("precious\n")
    sentinel.chmod(0o600)
    os.utime(sentinel, (1_000_000, 1_000_000))
    dest = outside / "dest"
    dest.mkdir()
    before = (sentinel.read_bytes(), sentinel.stat(), sorted(os.listdir(outside)))
    encoded = base64.b64encode(_crafted_archive("evil", sentinel)).decode()
    fake_tar = f"#!/bin/sh\nbase64 -d <<'EOF'\n{encoded}\nEOF\n"
    installed.sh(
        shared_vm,
        "mkdir -p /usr/local/bin /root/evil && cat > /usr/local/bin/tar && "
        "chmod 755 /usr/local/bin/tar",
        input=fake_tar,
    )
    try:
        result = installed.aq("cp", "-r", f"{shared_vm}:/root/evil", str(dest), check=False)
    finally:
        installed.sh(shared_vm, "rm -rf /usr/local/bin/tar /root/evil")
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "refused" in result.stderr, result.stderr
    after = (sentinel.read_bytes(), sentinel.stat(), sorted(os.listdir(outside)))
    assert (after[0], after[2]) == (before[0], before[2])
    assert (after[1].st_mode, after[1].st_mtime, after[1].st_ino) == (
        before[1].st_mode,
        before[1].st_mtime,
        before[1].st_ino,
    )
    assert os.listdir(dest) == []


def test_exec_fails_fast_when_the_guest_cannot_start_a_command(installed, tmp_path) -> None:
    """Read-only tmpfs over /tmp, /run and /dev/shm: the agent has no work folder.

    This runs on a VM of its own, not the shared one: after the mounts are undone, the
    agent has been seen to take minutes to answer again (an open question, see the
    issue note), and the tests that follow must not pay for it.
    """
    from tests.conftest import VM_CPUS

    name = "roomless"
    installed.aq("new", name, "--cpus", VM_CPUS)
    try:
        installed.aq("start", name, "--timeout", "600")
        script = (
            "setsid sh -c 'sleep 20; for d in /dev/shm /run /tmp; do "
            'grep -q "^aqblock $d " /proc/mounts && umount -l $d; done\' '
            "</dev/null >/dev/null 2>&1 &\n"
            "for d in /tmp /run /dev/shm; do "
            "[ -d $d ] && mount -t tmpfs -o ro,size=16k aqblock $d || :; done\n"
        )
        installed.sh(name, script)
        started = time.monotonic()
        result = installed.aq("exec", name, "--", "true", check=False, timeout=120)
        elapsed = time.monotonic() - started
        assert result.returncode == 255, result
        assert "could not start the command" in result.stderr, result.stderr
        assert "/tmp" in result.stderr and result.stderr.count("\n") == 1
        assert elapsed < 15, elapsed
        # A destination that is fine on this side: the copy then asks the guest.
        copied = installed.aq("cp", f"{name}:/etc/hostname", str(tmp_path / "x"), check=False)
        assert copied.returncode == 255 and "could not start" in copied.stderr, copied
        assert not (tmp_path / "x").exists()
    finally:
        installed.aq("stop", name, "--force", check=False)
        installed.aq("rm", name, check=False)
