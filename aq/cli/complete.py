"""Shell completion (bash, zsh, fish) through click: VM names, snapshot tags, image ids,
settings.

Click runs these when the shell asks (`_AQ_COMPLETE=bash_complete aq ...`, set up by
`eval "$(_AQ_COMPLETE=bash_source aq)"` or by Homebrew). They read the database through
aq.store.peek: read-only, no SQLAlchemy, and nothing created or migrated by a Tab press.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click


def _item(value: str, **kwargs):
    """click's CompletionItem, imported only when the shell asks (not by every run)."""
    from click.shell_completion import CompletionItem

    return CompletionItem(value, **kwargs)


def vm_name(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list:
    from aq.store import peek

    return [_item(n) for n in peek.vm_names() if n.startswith(incomplete)]


def image_id(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list:
    from aq.store import peek

    return [
        _item(str(i), help=f"{k} {v}") for i, k, v in peek.images() if str(i).startswith(incomplete)
    ]


def snapshot_tag(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list:
    """The tags `aq snapshot rm` and `aq new --from` take, each with what it holds."""
    from aq.store import peek

    return [
        _item(tag, help="live (disk and memory)" if live else "disk only")
        for tag, live in peek.snapshot_tags()
        if tag.startswith(incomplete)
    ]


def vm_or_path(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """`aq cp`: NAME: for a VM's side, else a local path (the shell completes those)."""
    if ":" in incomplete:
        return []  # a path inside a VM: nothing to list without asking the guest
    names = [_item(f"{i.value}:") for i in vm_name(ctx, param, incomplete)]
    return [*names, _item(incomplete, type="file")]


def setting_key(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list:
    from aq.config import SETTINGS

    return [_item(k) for k in SETTINGS if k.startswith(incomplete)]
