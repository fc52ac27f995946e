"""Issue 9: a hostile mirror on 127.0.0.1. Whatever it sends, aq refuses in one line,
within a bounded time, and leaves nothing outside AQ_HOME/images and no .part file."""

from __future__ import annotations

import contextlib
import socketserver
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aq import host, paths
from aq.images import catalog, download, http, releases
from aq.progress import Progress
from aq.store.db import reading, writing
from aq.store.models import Image

ARCH = host.guest_arch()
GOOD_SHA = "ab" * 32


def index(version: str = "3.23.6", **fields: object) -> bytes:
    """A latest-releases.yaml with one alpine-virt entry; `fields` override its keys."""
    entry: dict[str, object] = {
        "branch": "v" + ".".join(version.split(".")[:2]),
        "arch": ARCH,
        "version": version,
        "flavor": "alpine-virt",
        "file": f"alpine-virt-{version}-{ARCH}.iso",
        "size": 1000,
        "sha256": GOOD_SHA,
    }
    entry.update(fields)
    lines = ["---", "-"] + [f"  {k}: {v}" for k, v in entry.items() if v is not None]
    return ("\n".join(lines) + "\n").encode()


Route = Callable[[socketserver.StreamRequestHandler], None]


def reply(body: bytes, status: str = "200 OK", length: int | None = None) -> Route:
    def send(h: socketserver.StreamRequestHandler) -> None:
        size = len(body) if length is None else length
        h.wfile.write(f"HTTP/1.1 {status}\r\nContent-Length: {size}\r\n\r\n".encode() + body)

    return send


def trickle(data: bytes, every: float = 1.0) -> Route:
    """One byte a second (headers included when `data` starts with them)."""

    def send(h: socketserver.StreamRequestHandler) -> None:
        for byte in data:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(every)

    return send


def endless(h: socketserver.StreamRequestHandler) -> None:
    """A body without a length that never ends (until the client hangs up)."""
    h.wfile.write(b"HTTP/1.0 200 OK\r\n\r\n")
    block = b"\0" * 65536
    for _ in range(1 << 14):  # 1 GiB at most, so a broken test still ends
        h.wfile.write(block)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().decode("latin-1")
        while (header := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            self.server.headers.append(header.decode("latin-1"))  # type: ignore[attr-defined]
        path = line.split()[1] if len(line.split()) > 1 else "/"
        self.server.seen.append(path)  # type: ignore[attr-defined]
        for suffix, route in self.server.routes.items():  # type: ignore[attr-defined]
            if path.endswith(suffix):
                with contextlib.suppress(OSError):
                    route(self)
                return
        reply(b"", "404 Not Found")(self)


class Hostile(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.seen: list[str] = []
        self.headers: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alpine"


@pytest.fixture
def hostile(aq_home: Path, monkeypatch: pytest.MonkeyPatch):
    server = Hostile()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AQ_MIRROR", server.url)
    monkeypatch.setattr(download, "wait_exponential", lambda **_: lambda _s: 0)
    yield server
    server.shutdown()
    server.server_close()


def snapshot(root: Path, home: Path) -> dict[str, tuple[int, float]]:
    """Every file under `root` outside the aq home, with its size and mtime."""
    return {
        str(p): (p.lstat().st_size, p.lstat().st_mtime)
        for p in root.rglob("*")
        if not p.is_relative_to(home)
    }


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.rglob("*") if p.name.endswith(".part"))


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) >= 1
    assert "\x1b" not in stderr and "\x07" not in stderr
    return lines[-1]


# --- the index: every field checked before it is used ---------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (index(file="../../x"), "file '../../x'"),
        (index(file="/etc/passwd"), "file '/etc/passwd'"),
        (index(iso="../../../tmp/x.iso"), "iso '../../../tmp/x.iso'"),
        (index(version="3.23.6/../../x", file="x.iso"), "not an Alpine release"),
        (index(version="edge"), "not an Alpine release"),
        (
            index(
                file="alpine-virt-3.23.6-aarch64.iso"
                if ARCH != "aarch64"
                else "alpine-virt-3.23.6-x86_64.iso"
            ),
            "where alpine-virt-3.23.6",
        ),
        (index(sha256="zz" * 32), "sha256"),
        (index(sha256="abc"), "sha256"),
        (index(branch="v3.22"), "branch 'v3.22'"),
        (index(branch="../../x"), "branch '../../x'"),
        (index(size=-5), "size"),
        (index(size="'1e99'"), "size"),
        (index(version='"3.23.6\\e]0;pwned\\a"'), "\\x1b]0;pwned\\x07"),
    ],
)
def test_crafted_index_is_refused_and_writes_nothing(
    aq, hostile, aq_home, tmp_path, yaml_text, expected
) -> None:
    hostile.routes["latest-releases.yaml"] = reply(yaml_text)
    before = snapshot(tmp_path, aq_home)
    for command in (["images", "refresh"], ["images", "pull"]):
        result = aq(*command)
        assert result.exit_code == 1, result.stderr
        line = one_line(result.stderr)
        assert expected in line and "Hint:" in line
    assert snapshot(tmp_path, aq_home) == before
    assert leftovers(tmp_path) == []
    assert releases.cached(ARCH) is None
    assert not any(path.endswith(".iso") for path in hostile.seen)  # nothing downloaded


def test_alias_bomb_is_refused_in_one_line(aq, hostile) -> None:
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 10):
        prev = chr(ord("a") + n - 1)
        bomb.append(f"{chr(ord('a') + n)}: &{chr(ord('a') + n)} [{', '.join(['*' + prev] * 9)}]")
    hostile.routes["latest-releases.yaml"] = reply("\n".join(bomb).encode())
    start = time.monotonic()
    result = aq("images", "refresh")
    assert result.exit_code == 1
    assert "anchors and aliases are not allowed" in one_line(result.stderr)
    assert time.monotonic() - start < 5


def test_huge_or_deep_index_is_refused(aq, hostile) -> None:
    hostile.routes["latest-releases.yaml"] = reply(b"- " * (300 << 10))
    result = aq("images", "refresh")
    assert result.exit_code == 1 and "more than" in one_line(result.stderr)
    hostile.routes["latest-releases.yaml"] = reply(b"[" * 100_000)
    result = aq("images", "refresh")
    assert result.exit_code == 1 and "invalid YAML" in one_line(result.stderr)


def test_escape_sequences_in_http_reason_and_url_are_shown_escaped(aq, hostile) -> None:
    hostile.routes["latest-releases.yaml"] = reply(b"", "500 Oops\x1b]52;c;cHduZWQ=\x07")
    result = aq("images", "refresh")
    assert result.exit_code == 1
    assert "Oops\\x1b]52;c;cHduZWQ=\\x07" in one_line(result.stderr)


# --- time: a trickling mirror fails within the deadline --------------------------------


@pytest.mark.parametrize("what", ["body", "headers"])
def test_trickling_mirror_fails_within_the_deadline(aq, hostile, monkeypatch, what) -> None:
    monkeypatch.setattr(http, "DEADLINE_S", 2.0)
    body = index()
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    if what == "body":
        hostile.routes["latest-releases.yaml"] = lambda h: (
            h.wfile.write(head),
            trickle(body, 0.5)(h),
        )
    else:
        hostile.routes["latest-releases.yaml"] = trickle(head + body, 0.5)
    start = time.monotonic()
    result = aq("images", "refresh")
    took = time.monotonic() - start
    assert result.exit_code == 6, result.stderr
    assert "did not answer in time" in one_line(result.stderr)
    assert took < 6
    assert releases.cached(ARCH) is None


def test_trickling_iso_fails_within_the_deadline_and_leaves_no_part(
    aq, hostile, aq_home, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(http, "DEADLINE_S", 2.0)
    hostile.routes["latest-releases.yaml"] = reply(index())
    hostile.routes[".iso"] = lambda h: (
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        trickle(b"x" * 1000, 0.2)(h),
    )
    before = snapshot(tmp_path, aq_home)
    start = time.monotonic()
    result = aq("images", "pull")
    assert result.exit_code == 6, result.stderr
    assert time.monotonic() - start < 8
    assert leftovers(tmp_path) == []
    assert snapshot(tmp_path, aq_home) == before


# --- size: an ISO longer than the index says is refused --------------------------------


@pytest.mark.parametrize("route", ["endless", "long-header"])
def test_oversized_iso_is_refused_and_leaves_no_part(aq, hostile, aq_home, tmp_path, route):
    hostile.routes["latest-releases.yaml"] = reply(index(size=100_000))
    if route == "endless":
        hostile.routes[".iso"] = endless
    else:
        hostile.routes[".iso"] = reply(b"x" * 200_000)
    before = snapshot(tmp_path, aq_home)
    result = aq("images", "pull")
    assert result.exit_code == 7, result.stderr
    assert "more than the 100000 bytes" in one_line(result.stderr)
    assert leftovers(tmp_path) == []
    assert snapshot(tmp_path, aq_home) == before
    with reading() as session:
        assert session.query(Image).count() == 0


def test_without_a_size_the_hard_cap_applies(aq, hostile, monkeypatch) -> None:
    monkeypatch.setattr(download, "HARD_CAP", 1 << 20)
    hostile.routes["latest-releases.yaml"] = reply(index(size=None))
    hostile.routes[".iso"] = endless
    result = aq("images", "pull")
    assert result.exit_code == 7
    assert f"more than the {1 << 20} bytes" in one_line(result.stderr)


def test_ctrl_c_and_wrong_checksum_remove_the_part(aq_home, hostile, monkeypatch) -> None:
    hostile.routes[".iso"] = reply(b"y" * 5000)
    dest = paths.make_private_dir(paths.images_dir()) / "alpine-virt-3.23.6-x86_64.iso"

    class Interrupting(Progress):
        def transfer(self, label, total, done=0):
            from contextlib import contextmanager

            @contextmanager
            def ctx():
                def advance(_n):
                    assert paths.part_file(dest).stat().st_mode & 0o077 == 0  # private
                    raise KeyboardInterrupt

                yield advance

            return ctx()

    with pytest.raises(KeyboardInterrupt):
        download.download(hostile.url + "/x.iso", dest, Interrupting(terminal=False), 5000)
    assert not paths.part_file(dest).exists()
    # Verification failure through ensure_iso: the .part goes too.
    hostile.routes["latest-releases.yaml"] = reply(index(size=5000))
    from aq.errors import VerificationFailed
    from aq.images import base
    from aq.progress import QUIET

    with pytest.raises(VerificationFailed):
        base.ensure_iso(releases.refresh(ARCH), QUIET)
    assert leftovers(aq_home) == []


def test_cut_download_resumes_within_one_run(aq_home, hostile) -> None:
    data = bytes(range(256)) * 40
    calls: list[int] = []

    def cut_then_range(h) -> None:
        calls.append(1)
        if len(calls) == 1:
            h.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode())
            h.wfile.write(data[:4000])
            return
        h.wfile.write(
            f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(data) - 4000}\r\n"
            f"Content-Range: bytes 4000-{len(data) - 1}/{len(data)}\r\n\r\n".encode()
        )
        h.wfile.write(data[4000:])

    hostile.routes[".iso"] = cut_then_range
    dest = paths.make_private_dir(paths.images_dir()) / "alpine-virt-3.23.6-x86_64.iso"
    part = download.download(hostile.url + "/x.iso", dest, Progress(quiet=True), len(data))
    assert part.read_bytes() == data and len(calls) == 2
    assert [h.strip() for h in hostile.headers if h.lower().startswith("range:")] == [
        "Range: bytes=4000-"
    ]


def test_download_refuses_a_destination_outside_images(aq_home, hostile, tmp_path) -> None:
    from aq.errors import AqError

    with pytest.raises(AqError, match="not inside aq's images"):
        download.download(hostile.url + "/x.iso", tmp_path / "x.iso", Progress(quiet=True))
    assert not (tmp_path / "x.iso.part").exists()
    assert hostile.seen == []


# --- rollback: an older release is not followed silently ------------------------------


def test_older_release_after_a_newer_one_is_refused(aq, hostile) -> None:
    hostile.routes["latest-releases.yaml"] = reply(index("3.23.6"))
    assert aq("images", "refresh").exit_code == 0
    hostile.routes["latest-releases.yaml"] = reply(index("3.22.1"))
    result = aq("images", "refresh")
    assert result.exit_code == 4
    line = one_line(result.stderr)
    assert "3.22.1" in line and "3.23.6" in line and "--allow-older" in line
    assert releases.cached(ARCH).version == "3.23.6"
    result = aq("images", "refresh", "--allow-older")
    assert result.exit_code == 0 and "3.22.1" in result.stdout
    assert releases.cached(ARCH).version == "3.22.1"


def test_older_release_than_an_installed_base_is_refused(aq, hostile) -> None:
    from tests.conftest import register_blank_base

    register_blank_base(version="3.23.0")
    hostile.routes["latest-releases.yaml"] = reply(index("3.23.0_rc1"))
    result = aq("images", "refresh")
    assert result.exit_code == 4 and "3.23.0_rc1" in one_line(result.stderr)
    assert releases.cached(ARCH) is None
    hostile.routes["latest-releases.yaml"] = reply(index("3.23.0_p1"))
    assert aq("images", "refresh").exit_code == 0


@pytest.mark.parametrize(
    "ordered",
    [
        [
            "3.21.0_alpha1",
            "3.21.0_beta2",
            "3.21.0_rc1",
            "3.21.0_rc10",
            "3.21.0",
            "3.21.0_p1",
            "3.21.1",
            "3.22.0",
            "3.100.0",
            "4.0.0",
        ]
    ],
)
def test_version_key_orders_alpine_releases(ordered: list[str]) -> None:
    assert sorted(ordered, key=releases.version_key) == ordered


@pytest.mark.parametrize(
    "bad",
    [
        "edge",
        "\u0663.23.6",
        "3.23",
        "v3.23.6",
        "3.23.6_rc",
        "3.23.6-r0",
        "3.23.6\n",
        "3.23.6/../x",
        "",
    ],
)
def test_version_key_refuses_what_is_not_a_release(bad: str) -> None:
    with pytest.raises(ValueError):
        releases.version_key(bad)


# --- prune / rm never delete outside AQ_HOME/images ----------------------------------


def test_prune_and_rm_refuse_a_recorded_path_outside_images(aq, aq_home, tmp_path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("mine")
    paths.make_private_dir(paths.images_dir())
    with writing() as session:
        image = catalog.register(
            session, kind="iso", path=victim, fmt="raw", version="3.23.6", arch=ARCH, size=4
        )
        image_id = image.id
    for command in (["images", "prune"], ["images", "rm", str(image_id)]):
        result = aq(*command)
        assert result.exit_code == 1, result.stderr
        assert "outside aq's images folder" in one_line(result.stderr)
        assert victim.read_text() == "mine"
        with reading() as session:
            assert session.get(Image, image_id) is not None


def test_prune_refuses_a_symlink_that_leads_outside(aq, aq_home, tmp_path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("mine")
    link = paths.make_private_dir(paths.images_dir()) / "alpine-virt-3.23.6-x86_64.iso"
    link.symlink_to(victim)
    with writing() as session:
        catalog.register(
            session, kind="iso", path=link, fmt="raw", version="3.23.6", arch=ARCH, size=4
        )
    assert aq("images", "prune").exit_code == 1
    assert victim.read_text() == "mine"


# --- progress lines ----------------------------------------------------------------


def test_progress_lines_show_escape_sequences_escaped(capsys) -> None:
    Progress(terminal=False).step("downloading alpine-\x1b]0;owned\x07.iso\nFAKE: done")
    err = capsys.readouterr().err
    assert err == "aq: downloading alpine-\\x1b]0;owned\\x07.iso\\x0aFAKE: done\n"
    with Progress(terminal=True).transfer("[bold]x\x1b]52;c;cHduZWQ=\x07", 10) as advance:
        advance(10)
    err = capsys.readouterr().err
    assert "\x1b]" not in err and "\x07" not in err
    assert "[bold]x\\x1b]52;c;cHduZWQ=\\x07" in err


def test_new_keeps_the_installed_base_when_the_mirror_offers_an_older_one(aq, hostile) -> None:
    from tests.conftest import register_blank_base

    base = register_blank_base(version="3.23.6")
    hostile.routes["latest-releases.yaml"] = reply(index("3.22.1"))
    result = aq("images", "pull")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == base.path
    assert (
        "older than 3.23.6" in result.stderr and "using the installed base 3.23.6" in result.stderr
    )
    assert releases.cached(ARCH) is None
    assert not any(path.endswith(".iso") for path in hostile.seen)


def test_a_part_file_from_an_earlier_run_is_not_resumed(aq_home, hostile) -> None:
    """Its bytes were never verified (another process or user may have put them there)."""
    data = b"fresh" * 1000
    hostile.routes[".iso"] = reply(data)
    dest = paths.make_private_dir(paths.images_dir()) / "alpine-virt-3.23.6-x86_64.iso"
    paths.part_file(dest).write_bytes(b"planted")
    paths.part_file(dest).chmod(0o644)
    part = download.download(hostile.url + "/x.iso", dest, Progress(quiet=True), len(data))
    assert part.read_bytes() == data
    assert part.stat().st_mode & 0o777 == 0o600
    assert not any(h.lower().startswith("range:") for h in hostile.headers)
