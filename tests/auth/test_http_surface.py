"""The HTTP surface: health, readiness, metrics (read by Prometheus' own parser),
allow-lists in the browser login, and rate limiting."""

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.build import build_relay
from relay.client import drop_kind
from relay.config import Settings
from relay.logs import QUIETED_LOGGERS, JsonEventFormatter, configure_logging
from relay.messages import MessageType
from relay.metrics import ClusterStatus
from relay.protocol import encode_json
from relay.server import open_store
from tests.fake_github import CLIENT_SECRET
from tests.login_relay import LoginRelay, login_settings, running_login_relay
from tests.mixer_client import room_command


@pytest.fixture
async def login_relay(tmp_path: Path) -> AsyncIterator[LoginRelay]:
    async with running_login_relay(login_settings(tmp_path / "data")) as relay:
        yield relay


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_health_and_readiness(login_relay: LoginRelay) -> None:
    """/healthz answers ok; /readyz is 200 with every check ok."""
    async with login_relay.browser() as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")

    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {"listening": "ok", "store": "ok"},
    }


async def test_readiness_fails_while_the_store_cannot_write(
    login_relay: LoginRelay,
) -> None:
    """/readyz answers 503 naming the store while its writes fail (here: the
    database file capped below its size)."""
    store = login_relay.server.broadcaster.store
    assert store is not None
    async with login_relay.browser() as http:
        await http.get("/login")
        assert store.journal.flush(timeout=10)
        store.limit_size(1)  # no page beyond those the file has
        creator = await login_relay.connect()
        await creator.create_room("big")
        for _ in range(3):
            await creator.send_raw(room_command(140, b"x" * 1024 * 1024))

        await creator.sync()
        for _ in range(100):
            if store.journal.is_degraded:
                break

            await anyio.sleep(0.05)

        ready = await http.get("/readyz")
        store.limit_size(0)
        assert store.journal.flush(timeout=10)
        recovered = await http.get("/readyz")
        await creator.aclose()

    assert ready.status_code == 503
    assert recovered.status_code == 200
    assert ready.json()["checks"]["store"].startswith("the store is degraded")


async def test_metrics_read_by_the_prometheus_parser(
    login_relay: LoginRelay,
) -> None:
    """/metrics parses with prometheus_client's parser and counts connections,
    rooms, room traffic, refusals by reason, leases and logins."""
    refused = await login_relay.connect()
    await refused.send(MessageType.CLIENT_ID)
    await refused.expect_closed()
    await refused.aclose()
    async with login_relay.browser() as browser:
        await browser.get("/login")

    creator = await login_relay.connect()
    await creator.handshake("creator")
    await creator.create_room("scene")
    joiner = await login_relay.connect()
    await joiner.handshake("joiner")
    await joiner.join_room("scene")
    await creator.send_raw(room_command(140, b"x" * 100))
    await joiner.expect(140)
    async with login_relay.browser() as http:
        page = await http.get("/metrics")

    await creator.aclose()
    await joiner.aclose()
    values = samples(page.text)
    room = (("room", "scene"),)
    assert page.headers["content-type"].startswith("text/plain")
    assert values[("mixer_connections", ())] == 2
    assert values[("mixer_rooms", ())] == 1
    assert values[("mixer_room_members", room)] == 2
    assert values[("mixer_room_commands_in_total", room)] >= 1
    assert values[("mixer_room_commands_out_total", room)] >= 1
    assert values[("mixer_room_bytes_out_total", room)] >= 100
    assert values[("mixer_drops_total", (("reason", "login_required"),))] == 1
    assert values[("mixer_leases", ())] == 1
    assert values[("mixer_logins_total", (("outcome", "granted"),))] == 1
    assert ("mixer_store_unwritten_bytes", ()) in values


async def test_browser_login_refuses_account_outside_allow_list(
    login_relay: LoginRelay,
) -> None:
    """An account no allow-list names ends on a 403 page, without a lease."""
    login_relay.github.browser_user = "mallory"
    async with login_relay.browser() as browser:
        page = await browser.get("/login")
        lease = await browser.get("/login/lease")

    assert page.status_code == 403
    assert "not allowed" in page.text
    assert lease.status_code == 404


async def test_browser_login_allows_organisation_members(tmp_path: Path) -> None:
    """With MIXER_ALLOW_ORGS, an active member of the organisation gets a lease
    and a non-member does not."""
    settings = login_settings(
        tmp_path / "data", allow_users=frozenset(), allow_orgs=frozenset({"studio"})
    )
    async with running_login_relay(settings) as relay:
        relay.github.orgs["studio"] = {"carol"}
        relay.github.browser_user = "carol"
        async with relay.browser() as browser:
            member = await browser.get("/login")

        relay.github.browser_user = "dave"
        async with relay.browser("127.0.0.2") as browser:
            outsider = await browser.get("/login")

    assert member.status_code == 200
    assert "Logged in as carol" in member.text
    assert outsider.status_code == 403


async def test_login_endpoints_are_rate_limited_per_address(
    login_relay: LoginRelay,
) -> None:
    """Past 20 login requests a minute an address gets 429 with Retry-After,
    while another address is still served."""
    async with login_relay.browser() as browser:
        answers = [
            (await browser.get("/login", follow_redirects=False)).status_code
            for _ in range(21)
        ]
        limited = await browser.get("/login", follow_redirects=False)

    async with login_relay.browser("127.0.0.2") as other:
        elsewhere = await other.get("/login", follow_redirects=False)

    assert answers[:20] == [303] * 20
    assert answers[20] == 429
    assert int(limited.headers["retry-after"]) > 0
    assert elsewhere.status_code == 303


async def test_secrets_never_reach_logs_or_pages(
    login_relay: LoginRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the client secret, nor an authorization code, nor an access token
    appears in any log record (rendered as the relay renders them) or page,
    through browser and token logins, a bad token and a refusal."""
    caplog.set_level(logging.DEBUG)
    pages: list[str] = []
    async with login_relay.browser() as browser:
        pages.append((await browser.get("/login")).text)
        pages.append((await browser.get("/login/lease")).text)
        pages.append((await browser.get("/metrics")).text)

    token = login_relay.github.issue_token("alice")
    accepted = await login_relay.connect("127.0.0.2")
    await accepted.send(MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, token_json(token))
    await accepted.sync()
    await accepted.aclose()
    refused = await login_relay.connect("127.0.0.2")
    await refused.send(
        MessageType.SET_CLIENT_CUSTOM_ATTRIBUTES, token_json("gho_bogus_token_value")
    )
    await refused.expect_closed()
    await refused.aclose()

    # The HTTP clients' own records are left out: the test's browser logs the
    # redirects it follows, and the relay keeps those loggers to warnings.
    rendered = "\n".join(
        JsonEventFormatter().format(record)
        for record in caplog.records
        if not record.name.startswith(QUIETED_LOGGERS)
    )
    secrets = [
        CLIENT_SECRET,
        *login_relay.github.issued_codes,
        *login_relay.github.tokens,
        "gho_bogus_token_value",
    ]
    assert len(secrets) >= 4
    assert "login.token_accepted" in rendered
    for secret in secrets:
        assert secret not in rendered
        assert all(secret not in page for page in pages)


def token_json(token: str) -> bytes:
    return encode_json({"mixer_token": token})


def test_logging_keeps_http_client_records_to_warnings() -> None:
    """The relay's logging setup quiets the HTTP client's loggers, whose DEBUG
    and INFO records name request URLs and headers."""
    previous = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("DEBUG", "json", io.StringIO())
        levels = [logging.getLogger(name).level for name in QUIETED_LOGGERS]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in previous.items():
            logging.getLogger(name).setLevel(old)

    assert levels == [logging.WARNING] * len(QUIETED_LOGGERS)


async def test_bad_request_bodies_get_clear_errors(login_relay: LoginRelay) -> None:
    """A poll with no JSON, the wrong JSON, or a body far too large is answered
    400 without being read whole; an unknown login id is 400 too."""
    async with login_relay.browser() as http:
        not_json = await http.post("/login/device/poll", content=b"{nope")
        wrong = await http.post("/login/device/poll", json=["login_id"])
        huge = await http.post(
            "/login/device/poll", content=b'{"login_id": "' + b"a" * 10_000_000
        )
        unknown = await http.post("/login/device/poll", json={"login_id": "x"})
        health = await http.get("/healthz")

    assert [r.status_code for r in (not_json, wrong, huge, unknown)] == [400] * 4
    assert health.status_code == 200


async def test_callback_without_code_or_with_github_error(
    login_relay: LoginRelay,
) -> None:
    """A callback lacking code or state, or carrying GitHub's error (the person
    cancelled), is answered with a page saying so, and grants nothing."""
    async with login_relay.browser() as http:
        bare = await http.get("/login/callback")
        cancelled = await http.get(
            "/login/callback", params={"error": "access_denied", "state": "s"}
        )
        lease = await http.get("/login/lease")

    assert bare.status_code == 400
    assert cancelled.status_code == 400
    assert "access_denied" in cancelled.text
    assert lease.status_code == 404


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("backpressure: a 10-byte frame would exceed ...", "backpressure"),
        ("send stalled: no progress for 60 s", "send_stalled"),
        ("a partial frame got no bytes for 120 s", "frame_timeout"),
        ("frame too large: frame declares 9 payload bytes", "frame_too_large"),
        ("replaced by a new connection from the same address", "replaced"),
        ("lease revoked by an operator", "lease_revoked"),
        ("login required: this relay needs a GitHub login", "login_required"),
        ("login refused: the GitHub account 'x' is not allowed", "login_refused"),
        ("banned from this relay until 2027-01-01T00:00:00+00:00 (x)", "banned"),
        ("kicked by operator olga", "kicked"),
        ("room 'scene' deleted by operator olga", "room_deleted"),
        ("something new", "other"),
    ],
)
def test_drop_reasons_fall_into_few_kinds(reason: str, kind: str) -> None:
    """Every reason the relay ends a connection for is counted under one of a
    few fixed kinds, so that the metric's labels stay few."""
    assert drop_kind(reason) == kind


async def test_cluster_hook_counts_for_readiness_and_metrics(tmp_path: Path) -> None:
    """A relay given a cluster probe reports Raft role and commit index in
    /metrics, and is not ready while the cluster has no quorum."""
    status = ClusterStatus(role="leader", commit_index=41, has_quorum=True)
    settings = Settings(
        host="127.0.0.1",
        port=0,
        http_port=0,
        data_dir=tmp_path / "data",
        admin_socket="off",
    )
    store = open_store(settings)
    server = build_relay(settings, store, cluster=lambda: status)
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(server.serve)
            assert server.http is not None
            base = f"http://127.0.0.1:{server.http.port}"
            async with httpx2.AsyncClient(base_url=base, timeout=10) as http:
                ready = await http.get("/readyz")
                values = samples((await http.get("/metrics")).text)
                status = ClusterStatus(
                    role="follower", commit_index=41, has_quorum=False
                )
                lost = await http.get("/readyz")

            tasks.cancel_scope.cancel()
    finally:
        assert store.close(timeout=10)

    assert ready.status_code == 200
    assert values[("mixer_raft_role", (("role", "leader"),))] == 1
    assert values[("mixer_raft_commit_index", ())] == 41
    assert lost.status_code == 503
    assert lost.json()["checks"]["cluster"] == "no quorum"
