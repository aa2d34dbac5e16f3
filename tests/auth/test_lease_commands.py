"""``mixer-console leases`` and ``mixer-console lease revoke`` on a data
directory no relay holds."""

import io
import json
import time
from pathlib import Path

from mixer_console import admin_cli
from mixer_console.cli import build_parser
from store.access import LeaseRecord
from store.store import Store, StoreOptions


def run(data_dir: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    arguments = build_parser().parse_args(argv)
    status = admin_cli.run(
        arguments, env={"MIXER_DATA_DIR": str(data_dir)}, out=out, err=err
    )
    return status, out.getvalue(), err.getvalue()


def seed(data_dir: Path) -> None:
    now = time.time()
    store = Store.open(data_dir, StoreOptions())
    store.save_lease(LeaseRecord("10.0.0.5", "alice", now, now + 3600, "browser"))
    assert store.close(timeout=10)


def test_leases_lists_and_revoke_removes(tmp_path: Path) -> None:
    """The leases are listed (text and JSON); a revoked one is gone from the
    list; revoking an unknown address exits 6 with a message."""
    seed(tmp_path)

    listed = run(tmp_path, "leases")
    as_json = run(tmp_path, "leases", "--json")
    revoked = run(tmp_path, "lease", "revoke", "10.0.0.5")
    after = run(tmp_path, "leases")
    unknown = run(tmp_path, "lease", "revoke", "10.0.0.5")

    assert listed[0] == 0 and "10.0.0.5" in listed[1] and "alice" in listed[1]
    assert json.loads(as_json[1])[0]["login"] == "alice"
    assert revoked[:2] == (0, "revoked the lease of alice on 10.0.0.5\n")
    assert after[1] == "no lease in force\n"
    assert unknown[0] == admin_cli.EXIT_ROOM
    assert "no lease for address 10.0.0.5" in unknown[2]
