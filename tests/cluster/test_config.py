"""Cluster settings: every bad combination is one clear error, never the secret."""

import subprocess
import sys
from io import StringIO

import pytest
from pysyncobj.journal import FileJournal  # type: ignore[import-untyped]

from mixer_console import admin_cli
from mixer_console.cli import build_parser
from relay.cluster import ClusterLink, cluster_state
from relay.config import Settings
from relay.errors import ConfigError
from store.replication import JOURNAL_NAME
from store.store import Store, StoreOptions
from tests.cluster_nodes import ROOT

SECRET = "correct-horse-battery-staple"
PEERS = "127.0.0.1:7002,127.0.0.1:7004"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"MIXER_RAFT_PEERS": PEERS, "MIXER_RAFT_SECRET": SECRET},
            "needs MIXER_RAFT_SELF",
        ),
        ({"MIXER_RAFT_SELF": "127.0.0.1:7000"}, "needs MIXER_RAFT_PEERS"),
        (
            {"MIXER_RAFT_SELF": "127.0.0.1:7000", "MIXER_RAFT_PEERS": PEERS},
            "MIXER_RAFT_SECRET is required",
        ),
        (
            {
                "MIXER_RAFT_SELF": "127.0.0.1:7000",
                "MIXER_RAFT_PEERS": PEERS,
                "MIXER_RAFT_SECRET": "short",
            },
            "at least 16 characters",
        ),
        (
            {
                "MIXER_RAFT_SELF": "127.0.0.1:7002",
                "MIXER_RAFT_PEERS": PEERS,
                "MIXER_RAFT_SECRET": SECRET,
            },
            "lists this node itself",
        ),
        ({"MIXER_RAFT_SELF": "localhost"}, "must be host:port"),
        ({"MIXER_RAFT_SELF": "127.0.0.1:0"}, "from 1 to 65535"),
        ({"MIXER_RAFT_SELF": "127.0.0.1:99999"}, "from 1 to 65535"),
        ({"MIXER_RAFT_PEERS": "127.0.0.1:1,127.0.0.1:1"}, "lists an address twice"),
        ({"MIXER_RAFT_COMPACTION_ENTRIES": "1"}, "at least 2"),
        (
            {
                "MIXER_RAFT_SELF": "127.0.0.1:7001",
                "MIXER_RAFT_PEERS": PEERS,
                "MIXER_RAFT_SECRET": SECRET,
            },
            "listens on its Raft port + 1",
        ),
        (
            {
                "MIXER_RAFT_SELF": "127.0.0.1:65535",
                "MIXER_RAFT_PEERS": PEERS,
                "MIXER_RAFT_SECRET": SECRET,
            },
            "below 65535",
        ),
    ],
)
def test_settings_cluster_refuses_bad_combination(
    env: dict[str, str], expected: str
) -> None:
    """A cluster setting that cannot work is refused with a message naming it."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)

    assert expected in str(caught.value)


def test_settings_cluster_never_quotes_the_secret() -> None:
    """Errors about a cluster configuration never contain the secret itself."""
    env = {
        "MIXER_RAFT_SELF": "127.0.0.1:7001",
        "MIXER_RAFT_PEERS": PEERS + ",nonsense",
        "MIXER_RAFT_SECRET": SECRET,
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)

    assert SECRET not in str(caught.value)
    assert SECRET not in repr(Settings(raft_secret=SECRET))


def test_settings_cluster_parses_addresses() -> None:
    """Peers are split on commas, blanks ignored, and the node is clustered."""
    settings = Settings.from_env(
        {
            "MIXER_RAFT_SELF": " 127.0.0.1:7000 ",
            "MIXER_RAFT_PEERS": "127.0.0.1:7002, 127.0.0.1:7004,",
            "MIXER_RAFT_SECRET": SECRET,
        }
    )

    assert settings.raft_self == "127.0.0.1:7000"
    assert settings.raft_peers == ("127.0.0.1:7002", "127.0.0.1:7004")
    assert settings.is_clustered
    assert not Settings().is_clustered


def test_cli_refuses_cluster_without_secret(tmp_path) -> None:
    """A node given peers but no secret exits with status 2 before opening any
    port, and says why."""
    result = subprocess.run(
        [sys.executable, "-m", "mixer_console", "--no-ui"],
        cwd=ROOT,
        env={
            "MIXER_DATA_DIR": str(tmp_path),
            "MIXER_HOST": "127.0.0.1",
            "MIXER_PORT": "0",
            "MIXER_RAFT_SELF": "127.0.0.1:7000",
            "MIXER_RAFT_PEERS": PEERS,
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "MIXER_RAFT_SECRET is required" in result.stderr
    assert not (tmp_path / "rooms.sqlite").exists()


@pytest.mark.parametrize("action", [["delete", "r"], ["import", "room.mixer"]])
def test_admin_refuses_room_changes_on_cluster_node(tmp_path, action) -> None:
    """room import and room delete on a cluster node's data directory would make
    its database differ from the other nodes': refused, nothing created."""
    arguments = build_parser().parse_args(["room", *action])
    err = StringIO()
    status = admin_cli.run(
        arguments,
        env={
            "MIXER_DATA_DIR": str(tmp_path),
            "MIXER_RAFT_SELF": "127.0.0.1:7000",
            "MIXER_RAFT_PEERS": PEERS,
            "MIXER_RAFT_SECRET": SECRET,
        },
        out=StringIO(),
        err=err,
    )

    assert status == 2
    assert "nodes would then differ" in err.getvalue()
    assert not (tmp_path / "rooms.sqlite").exists()


def test_cluster_state_line_for_the_console(tmp_path) -> None:
    """The console's cluster_state is None on a single node, and on a node one
    line naming its role, leader, quorum and lag."""
    store = Store.open(tmp_path, StoreOptions())
    try:
        line = cluster_state(ClusterLink("127.0.0.1:7000", store))
    finally:
        store.close(timeout=5)

    assert cluster_state(None) is None
    assert line is not None
    assert "starting" in line
    assert "leader none" in line
    assert "NO QUORUM" in line
    assert "lag 0" in line


@pytest.mark.parametrize("action", [["delete", "r"], ["import", "room.mixer"]])
def test_admin_refuses_room_changes_on_a_cluster_nodes_folder(tmp_path, action) -> None:
    """The same without the node's MIXER_RAFT_* variables in the shell: the Raft
    journal in the data folder says whose folder it is."""
    journal = FileJournal(str(tmp_path / JOURNAL_NAME))
    journal.onOneSecondTimer()
    journal._destroy()
    arguments = build_parser().parse_args(["room", *action])
    err = StringIO()

    status = admin_cli.run(
        arguments, env={"MIXER_DATA_DIR": str(tmp_path)}, out=StringIO(), err=err
    )

    assert status == 2
    assert "cluster node's data folder" in err.getvalue()
    assert not (tmp_path / "rooms.sqlite").exists()
