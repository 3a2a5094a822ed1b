"""The settings model: profiles, env vars, and errors that name the key."""

from __future__ import annotations

import pytest

from plantstream.settings import Profile, SettingsError, child_env, load_settings


def test_local_profile_defaults_to_loopback_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("PLANTSTREAM_"):
            monkeypatch.delenv(key)
    settings = load_settings()
    assert settings.profile is Profile.LOCAL
    assert settings.kafka.bootstrap_servers.startswith("127.0.0.1:")
    assert settings.lake.root_uri.startswith("s3://")
    assert settings.state_dir.is_absolute()


def test_nested_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    monkeypatch.setenv("PLANTSTREAM_STREAM__WINDOW_SECONDS", "30")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.stream.window_seconds == 30


def test_invalid_value_fails_naming_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTSTREAM_HOTSTORE__PORT", "not-a-port")
    with pytest.raises(SettingsError, match="PLANTSTREAM_HOTSTORE__PORT"):
        load_settings()


def test_out_of_range_value_fails_naming_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTSTREAM_STREAM__CONSUMER_BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match="PLANTSTREAM_STREAM__CONSUMER_BATCH_SIZE"):
        load_settings()


def test_unknown_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTSTREAM_KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(SettingsError, match="PLANTSTREAM_KAFKA__BOOTSTRAP_SERVER"):
        load_settings()


def test_production_refuses_loopback_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTSTREAM_PROFILE", "production")
    monkeypatch.setenv("PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS", "kafka-0.prod:9092")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "PLANTSTREAM_HOTSTORE__HOST" in message
    assert "PLANTSTREAM_S3__ENDPOINT_URL" in message
    assert "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS" not in message


def test_production_with_real_endpoints_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTSTREAM_PROFILE", "production")
    monkeypatch.setenv("PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS", "kafka-0.prod:9092")
    monkeypatch.setenv("PLANTSTREAM_HOTSTORE__HOST", "clickhouse.prod")
    monkeypatch.setenv("PLANTSTREAM_S3__ENDPOINT_URL", "https://s3.eu-central-1.amazonaws.com")
    monkeypatch.setenv("PLANTSTREAM_MLFLOW__TRACKING_URI", "https://mlflow.prod")
    assert load_settings().profile is Profile.PRODUCTION


def test_secrets_are_masked_but_reach_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTSTREAM_S3__SECRET_ACCESS_KEY", "very-secret")
    settings = load_settings()
    assert "very-secret" not in str(settings.redacted())
    assert "very-secret" not in repr(settings)
    assert child_env(settings)["PLANTSTREAM_S3__SECRET_ACCESS_KEY"] == "very-secret"


def test_child_env_round_trips(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path, kafka={"topic_partitions": {"x": 2}})
    env = child_env(settings)
    monkey = pytest.MonkeyPatch()
    try:
        for key, value in env.items():
            if key.startswith("PLANTSTREAM_"):
                monkey.setenv(key, value)
        assert load_settings() == settings
    finally:
        monkey.undo()
