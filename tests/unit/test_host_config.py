"""The local host's settings, keys and log: what it reads, what it creates, what it never prints."""

from __future__ import annotations

import json
import logging
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from stack import config, keys, logs


def test_local_settings_fill_the_environment_without_overriding_it(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json.example").write_text(json.dumps({"Values": {"A": "example", "B": "example"}}))
    environ = {"A": "already set"}
    assert config.load_local_settings(tmp_path, environ) == tmp_path / "local.settings.json.example"
    assert environ == {"A": "already set", "B": "example"}
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"B": "local", "C": "local"}}))
    environ = {}
    assert config.load_local_settings(tmp_path, environ) == tmp_path / "local.settings.json"
    assert environ == {"B": "local", "C": "local"}


def test_binding_expressions_and_connections_resolve_from_settings() -> None:
    settings = {"SHIPBOT_JOBS_QUEUE": "shipbot-jobs", "SHIPBOT_STORAGE": "UseDevelopmentStorage=true",
                "AzureWebJobsOther": "other", "AzureWebJobsStorage": "default"}
    assert config.resolve("%SHIPBOT_JOBS_QUEUE%", settings, what="q") == "shipbot-jobs"
    assert config.resolve("jobs-%SHIPBOT_JOBS_QUEUE%-x", settings, what="q") == "jobs-shipbot-jobs-x"
    assert config.connection_string("SHIPBOT_STORAGE", settings, what="q") == "UseDevelopmentStorage=true"
    assert config.connection_string("Other", settings, what="q") == "other"
    assert config.connection_string(None, settings, what="q") == "default"
    with pytest.raises(config.ConfigError, match="MISSING"):
        config.resolve("%MISSING%", settings, what="q")
    with pytest.raises(config.ConfigError, match=r"^q: Storage account connection string 'AzureWebJobsNOPE' does "
                                                 "not exist. Make sure that it is a defined App Setting.$"):
        config.connection_string("NOPE", {}, what="q")


def test_connections_are_looked_up_in_the_hosts_order() -> None:
    every = {"ConnectionStrings:AzureWebJobsX": "1", "AzureWebJobsX": "2", "ConnectionStrings:X": "3", "X": "4"}
    for expected, key in enumerate(every, start=1):
        assert config.connection_string("X", {k: v for k, v in every.items() if int(v) >= expected},
                                        what="q") == str(expected), key
    assert config.connection_string("X", {"AzureWebJobsX": "", "X": "plain"}, what="q") == "plain"  # empty: missing
    assert config.connection_string("X", {"ConnectionStrings__X": "env form"}, what="q") == "env form"
    assert config.connection_string("", {"AzureWebJobsStorage": "default"}, what="q") == "default"


def test_host_json_queue_options_and_defaults(tmp_path: Path) -> None:
    assert config.HostOptions.read(tmp_path).queues.max_dequeue_count == 5
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "functionTimeout": "00:05:00", "extensions": {
        "http": {"routePrefix": ""},
        "queues": {"batchSize": 2, "maxDequeueCount": 3, "visibilityTimeout": "00:00:01",
                   "maxPollingInterval": 500, "messageEncoding": "none"}}}))
    options = config.HostOptions.read(tmp_path)
    assert options.route_prefix == "" and options.function_timeout == timedelta(minutes=5)
    assert (options.queues.batch_size, options.queues.threshold, options.queues.max_dequeue_count) == (2, 1, 3)
    assert options.queues.visibility_timeout == timedelta(seconds=1)
    assert options.queues.max_polling_interval == timedelta(milliseconds=500)
    assert options.queues.message_encoding == "none"


def test_host_keys_are_created_once_with_mode_0600_and_the_environment_overrides_them(tmp_path: Path) -> None:
    first = keys.HostKeys.load(tmp_path)
    path = tmp_path / keys.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.master) >= 40 and first.master != first.default_function_key != first.eventgrid
    again = keys.HostKeys.load(tmp_path, environ={"SHIPBOT_API_KEY": "api-key-from-env",
                                                  "SHIPBOT_EVENTGRID_KEY": "eventgrid-key-from-env"})
    assert again.master == first.master
    assert again.default_function_key == "api-key-from-env" and again.eventgrid == "eventgrid-key-from-env"
    assert again.allows("function", "api-key-from-env") and not again.allows("function", first.default_function_key)
    assert again.allows("system", "eventgrid-key-from-env") and again.allows("system", first.master)
    assert not again.allows("admin", "api-key-from-env") and again.allows("admin", first.master)
    assert again.allows("anonymous", None) and not again.allows("function", None)


def test_a_shared_secret_file_is_created_once(tmp_path: Path) -> None:
    secret = keys.shared_secret(tmp_path / "s.secret")
    assert keys.shared_secret(tmp_path / "s.secret") == secret
    assert stat.S_IMODE((tmp_path / "s.secret").stat().st_mode) == 0o600
    assert keys.shared_secret(tmp_path / "s.secret", override="from-env") == "from-env"


def test_log_lines_never_carry_keys_codes_or_signatures() -> None:
    redact = logs.Redactor(["master-key-0123456789"])
    formatter = logs.JsonFormatter(redact)
    text = ("GET /api/r?code=abc123&x=1 key master-key-0123456789 "
            "https://acct.blob.core.windows.net/c/b?sv=2024&sig=Zm9vYmFy%3D "
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0;EndpointSuffix=core "
            "Authorization: Bearer tok-123 {'x-functions-key': 'fk-456'}")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (text,), None)
    line = formatter.format(record)
    for secret in ("abc123", "master-key-0123456789", "Zm9vYmFy", "c2VjcmV0", "tok-123", "fk-456"):
        assert secret not in line
    assert json.loads(line)["message"].startswith("GET /api/r?code=***&x=1")
