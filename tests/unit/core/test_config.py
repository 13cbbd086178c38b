import pytest

from core.config import Settings
from core.domain.pricing import DEFAULT_PRICES, Price
from core.errors import ConfigError


def test_one_message_names_every_missing_setting():
    with pytest.raises(ConfigError) as err:
        Settings.from_env("bot", env={})
    assert "SLACK_BOT_TOKEN is required" in str(err.value)
    assert "SLACK_SIGNING_SECRET is required" in str(err.value)


def test_socket_mode_needs_no_signing_secret():
    settings = Settings.from_env("bot", env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "x"})
    assert settings.socket_mode


def test_bad_numbers_are_reported_together_with_missing_names():
    env = {"AICO_MIN_WORKERS": "two", "AICO_MAX_WORKERS": "-1"}
    with pytest.raises(ConfigError) as err:
        Settings.from_env("task", env=env)
    message = str(err.value)
    assert "ANTHROPIC_API_KEY is required" in message
    assert "AICO_MIN_WORKERS must be a whole number" in message
    assert "AICO_MAX_WORKERS must be at least 0" in message


def test_defaults_follow_the_design():
    settings = Settings.from_env("task", env={"ANTHROPIC_API_KEY": "k"})
    assert settings.amqp_url == "amqp://guest:guest@localhost:5672/%2F"
    assert settings.slack_api_url == "https://slack.com/api/"
    assert (settings.min_workers, settings.max_workers, settings.port) == (1, 5, 3000)
    assert settings.db_path.name == "aico.db"


def test_the_slack_url_gets_its_trailing_slash():
    env = {"SLACK_BOT_TOKEN": "x", "SLACK_API_URL": "http://127.0.0.1:9/api"}
    assert Settings.from_env("result", env=env).slack_api_url == "http://127.0.0.1:9/api/"


def test_an_unsupported_store_url_is_refused_at_start():
    env = {"ANTHROPIC_API_KEY": "k", "AICO_DB_URL": "mysql://db/aico"}
    with pytest.raises(ConfigError, match="AICO_DB_URL must be sqlite:///"):
        Settings.from_env("task", env=env)


def test_a_claude_timeout_that_could_outlast_the_consumer_timeout_is_refused():
    env = {"ANTHROPIC_API_KEY": "k", "AICO_CLAUDE_TIMEOUT": "900"}
    with pytest.raises(ConfigError, match="AICO_CLAUDE_TIMEOUT must be at most 300"):
        Settings.from_env("task", env=env)


def test_slack_pacing_can_be_turned_off_but_not_negative():
    off = {"SLACK_BOT_TOKEN": "x", "AICO_SLACK_CHANNEL_RATE": "0"}
    assert Settings.from_env("result", env=off).slack_channel_rate == 0
    negative = {"SLACK_BOT_TOKEN": "x", "AICO_SLACK_CHANNEL_RATE": "-1"}
    with pytest.raises(ConfigError, match="AICO_SLACK_CHANNEL_RATE must be 0 or more"):
        Settings.from_env("result", env=negative)


def test_prices_override_the_defaults_and_a_bad_one_is_refused_at_start():
    good = {"SLACK_BOT_TOKEN": "x", "AICO_PRICES": "claude-sonnet-5-5=3/12, my-model=1/2"}
    prices = Settings.from_env("result", env=good).prices
    assert (prices["claude-sonnet-5-5"], prices["my-model"]) == (Price(3, 12), Price(1, 2))
    assert prices["claude-opus-5-5"] == DEFAULT_PRICES["claude-opus-5-5"], "the others stay"
    bad = {"AICO_PRICES": "claude-sonnet-4-5=3/15, claude-opus-4-1=15"}
    with pytest.raises(ConfigError) as err:
        Settings.from_env("result", env=bad)
    assert "SLACK_BOT_TOKEN is required" in str(err.value)
    assert "AICO_PRICES: price entry 'claude-opus-4-1=15'" in str(err.value)
