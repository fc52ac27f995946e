"""The serial console: automation (expect-like), interactive attach, telnet bridge."""
