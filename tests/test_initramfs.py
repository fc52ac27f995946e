"""The guest's initramfs unpacked for QEMU (aq.initramfs): what is unpacked, what is
left as it came. That a real kernel boots the result is shown by every direct boot in
the e2e tests, whose copies are made this way."""

from __future__ import annotations

import gzip
import lzma

import pytest

from aq import coldplug, initramfs

ARCHIVE = coldplug._entry("init", 1, 0o100755, b"#!/bin/sh\n") + coldplug._entry("TRAILER!!!", 0, 0)
OTHER = coldplug._entry("etc/x", 2, 0o100644, b"x" * 7) + coldplug._entry("TRAILER!!!", 0, 0)


def test_a_gzipped_archive_is_unpacked():
    assert initramfs.unpacked(gzip.compress(ARCHIVE, mtime=0)) == ARCHIVE


def test_several_members_are_unpacked_one_after_the_other_on_4_byte_boundaries():
    odd = ARCHIVE + b"\0\0\0"  # an archive whose length is not a multiple of 4
    data = gzip.compress(odd, mtime=0) + b"\0" * 8 + gzip.compress(OTHER, mtime=0)
    assert initramfs.unpacked(data) == odd + b"\0" + OTHER


@pytest.mark.parametrize(
    "data",
    [
        b"",
        ARCHIVE,  # already unpacked
        lzma.compress(ARCHIVE),  # another compression: the guest's kernel inflates it
        gzip.compress(b"not a cpio archive at all"),
        gzip.compress(ARCHIVE, mtime=0) + ARCHIVE,  # unpacked bytes after a member
        gzip.compress(ARCHIVE, mtime=0)[:-9],  # cut short
        gzip.compress(ARCHIVE, mtime=0)[:20] + b"\xff" * 40,  # corrupt
    ],
)
def test_anything_else_is_not_unpacked(data):
    assert initramfs.unpacked(data) is None


def test_more_than_the_bound_is_not_unpacked():
    big = ARCHIVE + b"\0" * (1 << 20)
    assert initramfs.unpacked(gzip.compress(big), limit=len(big)) == big
    assert initramfs.unpacked(gzip.compress(big), limit=len(big) - 1) is None
    # Across members, the bound is on the whole.
    two = gzip.compress(big) + gzip.compress(big)
    assert initramfs.unpacked(two, limit=len(big) + 4) is None


def test_the_file_is_rewritten_unpacked_with_aqs_tail_kept_as_it_is(tmp_path):
    tail = coldplug.overlay("x86_64")
    path = tmp_path / "initrd"
    path.write_bytes(gzip.compress(ARCHIVE, mtime=0) + tail)
    shared = tmp_path / "a hard link to it"  # as a base's copy and its VMs' are
    shared.hardlink_to(path)
    assert initramfs.unpack_file(path, len(tail))
    assert path.read_bytes() == ARCHIVE + tail
    assert shared.read_bytes() == gzip.compress(ARCHIVE, mtime=0) + tail  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a hard link to it", "initrd"]
    # Already unpacked, or no tail: nothing changes.
    assert not initramfs.unpack_file(path, len(tail))
    assert path.read_bytes() == ARCHIVE + tail
    path.write_bytes(gzip.compress(ARCHIVE, mtime=0))
    assert initramfs.unpack_file(path) and path.read_bytes() == ARCHIVE
