"""A bad value of one cluster variable is reported alone: found by following
the README as a new engineer (readme6). The README says the checks that combine
variables come after the single values are right; a bad MIXER_RAFT_SELF also
reported "MIXER_RAFT_PEERS needs MIXER_RAFT_SELF" although it was set, and bad
peers reported "MIXER_RAFT_SELF needs MIXER_RAFT_PEERS"."""

import pytest

from relay.config import Settings
from relay.errors import ConfigError

SECRET = "correct-horse-battery-staple"


@pytest.mark.parametrize(
    ("env", "expected", "follow_on"),
    [
        (
            {
                "MIXER_RAFT_SELF": "127.0.0.1",
                "MIXER_RAFT_PEERS": "127.0.0.1:7002,127.0.0.1:7004",
                "MIXER_RAFT_SECRET": SECRET,
            },
            "must be host:port",
            "needs MIXER_RAFT_SELF",
        ),
        (
            {
                "MIXER_RAFT_SELF": "127.0.0.1:7000",
                "MIXER_RAFT_PEERS": "127.0.0.1:99999",
                "MIXER_RAFT_SECRET": SECRET,
            },
            "from 1 to 65535",
            "needs MIXER_RAFT_PEERS",
        ),
    ],
)
def test_a_bad_cluster_value_is_not_followed_by_a_wrong_combination_error(
    env: dict[str, str], expected: str, follow_on: str
) -> None:
    """Only the bad value is named; the variable that is set is not said to be
    missing."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)

    assert expected in str(caught.value)
    assert follow_on not in str(caught.value)
