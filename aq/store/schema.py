"""The schema revision this aq expects, so a current database needs no Alembic import.

A test checks that it equals the head of migrations/versions.
"""

HEAD_REVISION = "0004_snapshots"
# Every revision this aq can migrate from; anything else was written by a newer aq.
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004_snapshots")
