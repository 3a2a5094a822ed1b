"""The settings model: profiles, env vars, and errors that name the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from plantstream.settings import Profile, Settings, SettingsError, child_env, load_settings


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
    monkeypatch.setenv("PLANTSTREAM_WARM__BACKEND", "postgres")
    monkeypatch.setenv("PLANTSTREAM_WARM__POSTGRES_DSN", "postgresql://report:pw@warm.prod:5432/plant")
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


# --- every PLANTSTREAM_* variable is checked (issue 24, item 6) ---------------------------

PRODUCTION_HOSTS = {
    "PLANTSTREAM_PROFILE": "production",
    "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS": "kafka-0.prod:9092,kafka-1.prod:9092",
    "PLANTSTREAM_HOTSTORE__HOST": "clickhouse.prod",
    "PLANTSTREAM_S3__ENDPOINT_URL": "https://s3.eu-central-1.amazonaws.com",
    "PLANTSTREAM_MLFLOW__TRACKING_URI": "https://mlflow.prod",
}
if "warm" in Settings.model_fields:  # the warm tier's own production rule (a server, not a file)
    PRODUCTION_HOSTS |= {
        "PLANTSTREAM_WARM__BACKEND": "postgres",
        "PLANTSTREAM_WARM__POSTGRES_DSN": "postgresql://reporter:pw@pg.prod:5432/plant",
    }


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No PLANTSTREAM_* variable from the caller's shell (each test sets its own)."""
    for key in list(os.environ):
        if key.upper().startswith("PLANTSTREAM_"):
            monkeypatch.delenv(key)
    return monkeypatch


def production_env(monkeypatch: pytest.MonkeyPatch, **changes: str) -> None:
    for key, value in {**PRODUCTION_HOSTS, **changes}.items():
        monkeypatch.setenv(key, value)


def test_production_with_a_real_bootstrap_list_loads(clean_env: pytest.MonkeyPatch) -> None:
    production_env(clean_env)
    assert load_settings().kafka.bootstrap_servers == PRODUCTION_HOSTS["PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS"]


@pytest.mark.parametrize(
    "servers",
    [
        "kafka-0.prod:9092,127.0.0.1:9092",  # loopback later in the list
        "kafka-0.prod:9092, kafka-1.prod:9092 ,127.0.0.1:9092",
        "::1",
        "[::1]:9092",
        "0.0.0.0:9092",
        "[::]:9092",
        "LOCALHOST:9092",
        "kafka-0.prod:9092,LocalHost:9092",
        "127.4.5.6:9092,kafka-0.prod:9092",
        "kafka-0.prod:9092,kafka-1.prod:9092,127.200.0.1:9092",
        "SASL_SSL://localhost:9093",
        "[::ffff:127.0.0.1]:9092",
        "127.1:9092",  # shorthand the resolver accepts
    ],
)
def test_production_refuses_a_loopback_anywhere_in_the_bootstrap_list(
    clean_env: pytest.MonkeyPatch, servers: str
) -> None:
    production_env(clean_env, PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS=servers)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS" in message
    for other in ("HOTSTORE__HOST", "S3__ENDPOINT_URL", "MLFLOW__TRACKING_URI"):
        assert other not in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PLANTSTREAM_HOTSTORE__HOST", "::1"),
        ("PLANTSTREAM_HOTSTORE__HOST", "[::1]"),
        ("PLANTSTREAM_HOTSTORE__HOST", "0.0.0.0"),
        ("PLANTSTREAM_HOTSTORE__HOST", "LOCALHOST"),
        ("PLANTSTREAM_HOTSTORE__HOST", "127.0.1.1"),
        ("PLANTSTREAM_S3__ENDPOINT_URL", "http://[::1]:8333"),
        ("PLANTSTREAM_S3__ENDPOINT_URL", "https://0.0.0.0"),
        ("PLANTSTREAM_S3__ENDPOINT_URL", "http://user:pw@127.0.0.1:8333/bucket"),
        ("PLANTSTREAM_MLFLOW__TRACKING_URI", "https://LocalHost.:5000"),
        ("PLANTSTREAM_MLFLOW__TRACKING_URI", "http://127.9.9.9:5000"),
    ],
)
def test_production_refuses_loopback_in_every_endpoint(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    production_env(clean_env, **{variable: value})
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_production_accepts_names_that_only_look_local(clean_env: pytest.MonkeyPatch) -> None:
    production_env(
        clean_env,
        PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS="localhost-kafka.prod:9092,kafka127.prod:9092,[2001:db8::1]:9092",
        PLANTSTREAM_HOTSTORE__HOST="10.0.0.7",
    )
    assert load_settings().hotstore.host == "10.0.0.7"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PLANTSTREAM_KAFKA__TOPIC_PARTITIONS", "{bad"),
        ("PLANTSTREAM_KAFKA__EXTRA_CONFIG", "notjson"),
        ("PLANTSTREAM_KAFKA__EXTRA_CONFIG", '{"sasl.password": "s3cr3t-value",}'),
        ("PLANTSTREAM_KAFKA__TOPIC_PARTITIONS", ""),
    ],
)
def test_bad_json_names_the_variable_and_says_json(clean_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert variable in message
    assert "not valid JSON" in message
    assert "PLANTSTREAM_KAFKA:" not in message and "kafka" not in message.replace(variable, "")
    assert "s3cr3t-value" not in message


def test_valid_json_with_a_wrong_type_still_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PLANTSTREAM_KAFKA__TOPIC_PARTITIONS", '{"factory.machine.telemetry": "many"}')
    with pytest.raises(SettingsError, match="PLANTSTREAM_KAFKA__TOPIC_PARTITIONS"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("PLANTSTREAM_STRAEM__WINDOW_SECONDS", "PLANTSTREAM_STREAM__WINDOW_SECONDS"),  # misspelled section
        ("PLANTSTREAM_KAFKA__BOOTSTRAP_SERVER", "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS"),  # misspelled leaf
        ("PLANTSTREAM_HOTSTROE__PORT", "PLANTSTREAM_HOTSTORE__PORT"),
        ("PLANTSTREAM_STATEDIR", "PLANTSTREAM_STATE_DIR"),
        ("plantstream_straem__window_seconds", "PLANTSTREAM_STREAM__WINDOW_SECONDS"),  # read case-insensitively
    ],
)
def test_unknown_variable_is_refused_with_the_closest_name(
    clean_env: pytest.MonkeyPatch, variable: str, suggestion: str
) -> None:
    clean_env.setenv(variable, "5")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert variable in message
    assert f"did you mean {suggestion}?" in message


def test_every_known_name_is_accepted(clean_env: pytest.MonkeyPatch, tmp_path) -> None:
    # Every name `plantstream settings` prints (and child_env passes on) loads again as is,
    # also in lower case (the model reads the environment case-insensitively).
    settings = load_settings(state_dir=tmp_path)
    exported = {k: v for k, v in child_env(settings).items() if k.startswith("PLANTSTREAM_")}
    assert set(exported) == set(settings.redacted())
    for key, value in exported.items():
        clean_env.setenv(key.lower(), value)
    assert load_settings() == settings


def test_section_and_sub_keys_are_not_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PLANTSTREAM_KAFKA", '{"client_id": "x"}')
    clean_env.setenv("PLANTSTREAM_KAFKA__TOPIC_PARTITIONS__TELEMETRY", "8")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "PLANTSTREAM_KAFKA: is a section" in message
    assert "PLANTSTREAM_KAFKA__TOPIC_PARTITIONS__TELEMETRY: not a setting" in message


def test_every_problem_is_reported_at_once(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PLANTSTREAM_STRAEM__WINDOW_SECONDS", "5")
    clean_env.setenv("PLANTSTREAM_HOTSTORE__PORT", "not-a-port")
    clean_env.setenv("PLANTSTREAM_KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(SettingsError) as info:
        load_settings()
    lines = str(info.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVER",
        "PLANTSTREAM_STRAEM__WINDOW_SECONDS",
        "PLANTSTREAM_HOTSTORE__PORT",
    ]


def test_secrets_never_appear_in_messages(clean_env: pytest.MonkeyPatch) -> None:
    production_env(clean_env, PLANTSTREAM_HOTSTORE__HOST="127.0.0.1")  # a model-level error
    clean_env.setenv("PLANTSTREAM_KAFKA__EXTRA_CONFIG", '{"sasl.password": "hunter2-extra"}')
    clean_env.setenv("PLANTSTREAM_API_TOKEN", "hunter2-unknown")  # unknown: its value is not judged
    clean_env.setenv("PLANTSTREAM_HOTSTORE__PASSWORD", "hunter2-pw")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "PLANTSTREAM_API_TOKEN" in message and "PLANTSTREAM_HOTSTORE__HOST" in message
    assert "hunter2" not in message
    clean_env.delenv("PLANTSTREAM_API_TOKEN")
    clean_env.setenv("PLANTSTREAM_S3__SECRET_ACCES_KEY", "hunter2-typo")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "did you mean PLANTSTREAM_S3__SECRET_ACCESS_KEY?" in str(info.value) and "hunter2" not in str(info.value)
    clean_env.delenv("PLANTSTREAM_S3__SECRET_ACCES_KEY")
    clean_env.setenv("PLANTSTREAM_KAFKA__EXTRA_CONFIG", '{"sasl.password": ["hunter2-list"]}')  # wrong type
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "PLANTSTREAM_KAFKA__EXTRA_CONFIG" in str(info.value) and "hunter2" not in str(info.value)


# --- the per-user state dir (issue 24, item 7) --------------------------------------------


def test_default_state_dir_is_per_user_not_per_folder(
    clean_env: pytest.MonkeyPatch, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        assert load_settings().state_dir == tmp_path / "xdg" / "plantstream"
    assert not (tmp_path / "xdg").exists()  # loading settings creates nothing
    clean_env.delenv("XDG_STATE_HOME")
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert load_settings().state_dir == tmp_path / "home" / ".local" / "state" / "plantstream"
    clean_env.setenv("XDG_STATE_HOME", "relative/ignored")  # the XDG spec: relative values are invalid
    assert load_settings().state_dir == tmp_path / "home" / ".local" / "state" / "plantstream"
    clean_env.setenv("PLANTSTREAM_STATE_DIR", "here")
    assert load_settings().state_dir == tmp_path / "b" / "here"


# --- the CLI: exit 2, one paragraph, no traceback -------------------------------------------

BAD_ENVIRONMENTS = {
    "loopback-later-in-list": {**PRODUCTION_HOSTS, "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS": "kafka.prod:9092,::1"},
    "bracketed-v6": {**PRODUCTION_HOSTS, "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS": "[::1]:9092"},
    "unspecified": {**PRODUCTION_HOSTS, "PLANTSTREAM_HOTSTORE__HOST": "0.0.0.0"},
    "upper-localhost": {**PRODUCTION_HOSTS, "PLANTSTREAM_S3__ENDPOINT_URL": "http://LOCALHOST:8333"},
    "bad-json-dict": {"PLANTSTREAM_KAFKA__TOPIC_PARTITIONS": "{bad"},
    "bad-json-extra": {"PLANTSTREAM_KAFKA__EXTRA_CONFIG": "notjson"},
    "misspelled-section": {"PLANTSTREAM_STRAEM__WINDOW_SECONDS": "5"},
    "misspelled-leaf": {"PLANTSTREAM_KAFKA__BOOTSTRAP_SERVER": "typo:9092"},
    "bad-value": {"PLANTSTREAM_HOTSTORE__PORT": "not-a-port"},
}
NAMED = {
    "loopback-later-in-list": "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS",
    "bracketed-v6": "PLANTSTREAM_KAFKA__BOOTSTRAP_SERVERS",
    "unspecified": "PLANTSTREAM_HOTSTORE__HOST",
    "upper-localhost": "PLANTSTREAM_S3__ENDPOINT_URL",
}


@pytest.mark.parametrize("case", list(BAD_ENVIRONMENTS))
def test_cli_settings_exits_2_with_one_paragraph(case: str, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PLANTSTREAM_")}
    env.update(BAD_ENVIRONMENTS[case], PLANTSTREAM_STATE_DIR=str(tmp_path / "state"), COLUMNS="60")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "plantstream"), "settings"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    message = done.stderr.strip()
    assert "Traceback" not in message and 'File "' not in message
    assert "\n\n" not in message  # one paragraph: the heading and one line per variable
    lines = message.splitlines()
    assert lines[0] == "invalid PlantStream settings:"
    assert len(lines) == 2, message
    assert NAMED.get(case, next(iter(BAD_ENVIRONMENTS[case]))) in lines[1]
