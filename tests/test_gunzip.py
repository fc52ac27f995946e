"""Bounded inflation of a guest's gzip member (aq.gunzip), shared by aq.pvh and
aq.initramfs, whose own tests show what each does with it."""

from __future__ import annotations

import gzip
import zlib

import pytest

from aq import gunzip

DATA = b"a guest's bytes " * 64


def test_a_member_and_what_follows_it():
    assert gunzip.member(gzip.compress(DATA, mtime=0) + b"next", len(DATA)) == (DATA, b"next")


@pytest.mark.parametrize(
    ("data", "limit"),
    [
        (gzip.compress(DATA, mtime=0), len(DATA) - 1),  # one byte over the bound
        (gzip.compress(DATA, mtime=0), -1),  # no room at all (never zlib's "no bound")
        (gzip.compress(DATA, mtime=0)[:-9], len(DATA)),  # cut short
        (zlib.compress(DATA), len(DATA)),  # not gzip
        (gzip.compress(DATA, mtime=0)[:12] + b"\xff" * 32, len(DATA)),  # corrupt
        (b"", len(DATA)),
    ],
)
def test_anything_but_a_whole_member_within_the_bound_is_refused(data, limit):
    assert gunzip.member(data, limit) is None


def test_an_empty_member_fits_a_bound_of_zero():
    assert gunzip.member(gzip.compress(b"", mtime=0), 0) == (b"", b"")
