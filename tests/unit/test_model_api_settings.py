"""Settings.from_env: the one place model_api reads its configuration (never os.environ in these tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_api.settings import DEFAULT_ENTRY_SCRIPT, BuildInfo, Settings, SettingsError

BUILD_VARS = {"MODEL_NAME": "model_name", "MODEL_VERSION": "model_version", "MODEL_SHA256": "model_sha256",
              "GIT_COMMIT": "git_commit", "IMAGE_TAG": "image_tag", "BUILD_ID": "build_id",
              "RELEASE_ID": "release_id"}


def test_from_env_without_variables_gives_the_defaults():
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.model_dir == Path("/var/azureml-app/model")
    assert settings.entry_script == Path(DEFAULT_ENTRY_SCRIPT)
    assert Path(DEFAULT_ENTRY_SCRIPT).name == "default_score.py" and Path(DEFAULT_ENTRY_SCRIPT).is_file()
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 5001, 0)
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.scoring_timeout_s == 60.0
    assert settings.access_log is True
    assert settings.model_name == "model"
    assert settings.build == BuildInfo()


def test_from_env_parses_every_setting():
    settings = Settings.from_env({
        "AZUREML_MODEL_DIR": "/models/diabetes", "AZUREML_ENTRY_SCRIPT": "/app/score.py",
        "MODEL_API_HOST": "127.0.0.1", "MODEL_API_PORT": "8080", "MODEL_API_WORKERS": "3",
        "MODEL_API_MAX_BODY_BYTES": "2048", "MODEL_API_SCORING_TIMEOUT_S": "2.5", "MODEL_API_ACCESS_LOG": "false",
        **{name: f"{field}-value" for name, field in BUILD_VARS.items()},
    })

    assert settings.model_dir == Path("/models/diabetes")
    assert settings.entry_script == Path("/app/score.py")
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 3)
    assert (settings.max_body_bytes, settings.scoring_timeout_s, settings.access_log) == (2048, 2.5, False)
    assert settings.model_name == "model_name-value"
    assert settings.build == BuildInfo(**{field: f"{field}-value" for field in BUILD_VARS.values()})
    assert settings.worker_count() == 3


def test_from_env_treats_empty_build_variables_as_unknown():
    settings = Settings.from_env({name: "" for name in BUILD_VARS})

    assert settings.build == BuildInfo()
    assert settings.model_name == "model"


@pytest.mark.parametrize(("value", "enabled"), [
    ("true", True), ("1", True), ("yes", True), ("on", True), ("0", False), ("false", False), ("False", False),
    ("NO", False), ("off", False), (" Off ", False),
])
def test_from_env_reads_the_access_log_switch(value, enabled):
    assert Settings.from_env({"MODEL_API_ACCESS_LOG": value}).access_log is enabled


def test_zero_workers_means_one_per_cpu_the_process_may_use():
    assert Settings.from_env({"MODEL_API_WORKERS": "0"}).worker_count() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("name", "value"), [
    ("MODEL_API_PORT", "http"), ("MODEL_API_PORT", ""), ("MODEL_API_PORT", "80.5"),
    ("MODEL_API_WORKERS", "many"), ("MODEL_API_WORKERS", "-1"),
    ("MODEL_API_MAX_BODY_BYTES", "10MiB"), ("MODEL_API_MAX_BODY_BYTES", "0"), ("MODEL_API_MAX_BODY_BYTES", "-5"),
    ("MODEL_API_SCORING_TIMEOUT_S", "soon"), ("MODEL_API_SCORING_TIMEOUT_S", "0"),
    ("MODEL_API_SCORING_TIMEOUT_S", "-1"), ("MODEL_API_SCORING_TIMEOUT_S", "nan"),
    ("MODEL_API_SCORING_TIMEOUT_S", "inf"), ("MODEL_API_SCORING_TIMEOUT_S", "1e300"),
    ("MODEL_API_PORT", "0"), ("MODEL_API_PORT", "70000"), ("MODEL_API_ACCESS_LOG", "maybe"),
])
def test_from_env_refuses_a_bad_value_with_a_settings_error_that_names_it(name, value):
    with pytest.raises(SettingsError, match=f"^{name}="):
        Settings.from_env({name: value})


def test_the_scoring_timeout_may_be_up_to_a_day():
    assert Settings.from_env({"MODEL_API_SCORING_TIMEOUT_S": "86400"}).scoring_timeout_s == 86400.0
    assert Settings.from_env({"MODEL_API_SCORING_TIMEOUT_S": "0.001"}).scoring_timeout_s == 0.001


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)
