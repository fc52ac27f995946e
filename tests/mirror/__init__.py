"""aq's test Alpine mirror, built from a real Alpine kernel, initramfs and userland.

tree = build_mirror()                     # cached; see build.py
server, base_url = start_server(tree.root)  # AQ_MIRROR=base_url
...                                       # AQ_TRUSTED_KEY=tree.public_key
server.stop()
"""

from .build import MirrorTree, build_mirror, default_cache_root
from .server import MirrorServer, start_server

__all__ = ["MirrorServer", "MirrorTree", "build_mirror", "default_cache_root", "start_server"]
