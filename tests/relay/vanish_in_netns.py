"""Run inside a fresh network namespace: a client in a room vanishes from the
network (the namespace's loopback goes down) and the relay's log is printed.

Used by test_vanished_peer.py through ``unshare -n``; touches no other network.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0
JOIN_ROOM = (1).to_bytes(2, "little")


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = {
        **os.environ,
        "MIXER_KEEPALIVE_IDLE": "1",
        "MIXER_SEND_TIMEOUT": "3",
        "MIXER_LOG_FORMAT": "json",
        "MIXER_PORT": "0",
    }
    relay = subprocess.Popen(
        [sys.executable, "-m", "mixer_console", "--no-ui", "--host", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert relay.stdout is not None
    try:
        port = json.loads(relay.stdout.readline())["port"]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        name = b"scene"
        join = len(name).to_bytes(4, "little") + name
        header = len(join).to_bytes(8, "little") + bytes(4) + JOIN_ROOM
        client.sendall(header + join)
        events = [json.loads(relay.stdout.readline()) for _ in range(2)]
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        vanished = time.monotonic()
        while events[-1]["event"] != "client.disconnected":
            if time.monotonic() - vanished > DEADLINE:
                break

            events.append(json.loads(relay.stdout.readline()))

        events.append({"event": "test.elapsed", "seconds": time.monotonic() - vanished})
        sys.stdout.write(json.dumps(events) + "\n")
        client.close()
    finally:
        relay.terminate()
        relay.wait(timeout=5)


if __name__ == "__main__":
    main()
