"""The command channel: the in-guest agent and the host side of aq exec / aq cp."""
