"""Login settings from the environment: what is required, what is refused, and
that a secret is never repeated in an error."""

import pytest

from relay.config import Settings
from relay.errors import ConfigError

LOGIN_ENV = {
    "MIXER_AUTH": "github",
    "GITHUB_CLIENT_ID": "Iv1.abc",
    "GITHUB_CLIENT_SECRET": "s3cr3t-value-1234",
    "MIXER_PUBLIC_URL": "http://relay.studio:12801/",
    "MIXER_ALLOW_USERS": "Alice, bob",
}


def test_login_settings_from_env() -> None:
    """A complete login configuration is read, names compared without case,
    and the public URL without its trailing slash."""
    settings = Settings.from_env(
        {**LOGIN_ENV, "MIXER_ALLOW_ORGS": "Studio", "MIXER_LEASE_TTL": "3600"}
    )

    assert settings.is_login_required
    assert settings.allow_users == {"alice", "bob"}
    assert settings.allow_orgs == {"studio"}
    assert settings.login_url == "http://relay.studio:12801/login"
    assert settings.lease_ttl == 3600
    assert "s3cr3t" not in repr(settings)


def test_login_is_off_by_default() -> None:
    """Without MIXER_AUTH no login is required and none of its variables are."""
    settings = Settings.from_env({})

    assert not settings.is_login_required
    assert settings.http_port == 12801


@pytest.mark.parametrize(
    "missing", ["GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET", "MIXER_PUBLIC_URL"]
)
def test_github_login_without_a_required_variable_is_refused(missing: str) -> None:
    """MIXER_AUTH=github without the client id, the secret or the public URL is a
    configuration error naming the missing variable."""
    env = {key: value for key, value in LOGIN_ENV.items() if key != missing}

    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)

    assert missing in str(error.value)


def test_github_login_without_allow_list_is_refused() -> None:
    """Login with no allow-list at all is refused: it would let any GitHub
    account in; ``*`` says so on purpose."""
    env = {key: value for key, value in LOGIN_ENV.items() if key != "MIXER_ALLOW_USERS"}

    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)

    assert "MIXER_ALLOW_USERS" in str(error.value)
    assert Settings.from_env({**env, "MIXER_ALLOW_USERS": "*"}).allow_users == {"*"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MIXER_AUTH", "ldap"),
        ("MIXER_PUBLIC_URL", "relay.studio:12801"),
        ("MIXER_PUBLIC_URL", "ftp://relay.studio"),
        ("MIXER_PUBLIC_URL", "http://relay.studio/?next=evil"),
        ("MIXER_GITHUB_URL", "not a url"),
        ("MIXER_GITHUB_API_URL", "https://"),
        # A port that is not one: accepted, each request to GitHub would fail.
        ("MIXER_GITHUB_URL", "https://github.example.com:notaport"),
        ("MIXER_GITHUB_API_URL", "https://github.example.com:99999/api/v3"),
        ("MIXER_PUBLIC_URL", "http://relay.studio:12801x"),
        ("MIXER_ALLOW_USERS", "alice, bad name"),
        ("MIXER_ALLOW_ORGS", "*"),
        ("MIXER_OPERATORS", "-leading-hyphen"),
        ("MIXER_LEASE_TTL", "0"),
        ("MIXER_LEASE_TTL", "forever"),
        ("MIXER_HTTP_PORT", "65536"),
        # Not UTF-8 (a surrogate escape): the login page answered 500.
        ("MIXER_GITHUB_URL", "http://github.example.com/\udcff"),
        ("MIXER_PUBLIC_URL", "http://relay.studio:12801/\udcff"),
        ("MIXER_PUBLIC_URL", "http://[::1"),
    ],
)
def test_bad_login_value_is_refused(variable: str, value: str) -> None:
    """Each unusable login value is a configuration error naming its variable."""
    with pytest.raises(ConfigError) as error:
        Settings.from_env({**LOGIN_ENV, variable: value})

    assert variable in str(error.value)


def test_bad_secret_is_not_repeated_in_the_error() -> None:
    """An error about GITHUB_CLIENT_SECRET names the variable, never its value."""
    secret = "x" * 20
    with pytest.raises(ConfigError) as error:
        Settings.from_env(
            {
                **{k: v for k, v in LOGIN_ENV.items() if k != "GITHUB_CLIENT_ID"},
                "GITHUB_CLIENT_SECRET": secret,
            }
        )

    assert secret not in str(error.value)
