"""The schema revision this aq expects, so a current database needs no Alembic import.

A test checks that it equals the head of migrations/versions.
"""

HEAD_REVISION = "0003"
