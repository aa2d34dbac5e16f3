"""Ban subjects name a peer address the same way however the peer reached us."""

import time

from relay.bans import BanList, address_subject
from relay.control import Ban


def test_an_address_ban_refuses_the_peer_through_a_dual_stack_socket() -> None:
    """A ban made for an IPv4 peer refuses it when a dual-stack listener shows it
    as ``::ffff:...``, and the other way round; the subject is the IPv4 form."""
    bans = BanList(None)
    subject = address_subject("::ffff:10.0.0.5")
    bans.add(Ban(subject, time.time() + 60, "kicked by olga", "olga"))

    assert subject == "address:10.0.0.5"
    assert bans.refusal("10.0.0.5", None) is not None
    assert bans.refusal("::ffff:10.0.0.5", None) is not None
    assert bans.refusal("10.0.0.6", None) is None
