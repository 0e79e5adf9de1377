"""model_api's configuration: one frozen dataclass, read from the environment in exactly one place.

The Azure ML names (AZUREML_MODEL_DIR, AZUREML_ENTRY_SCRIPT) are kept so that an Azure ML deployment's
environment works unchanged; everything of our own is prefixed MODEL_API_. Build metadata (model name,
version, sha256, commit, image tag, build id, release id) is baked into the image by build args; a value
that was not given stays None and /version reports null for it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_ENTRY_SCRIPT = str(Path(__file__).with_name("default_score.py"))
MAX_SCORING_TIMEOUT_S = 24 * 3600.0


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclasses.dataclass(frozen=True)
class BuildInfo:
    """What /version reports. Known at build time; never guessed at run time."""

    model_name: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    git_commit: str | None = None
    image_tag: str | None = None
    build_id: str | None = None
    release_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
    model_dir: Path = Path("/var/azureml-app/model")
    """AZUREML_MODEL_DIR: the folder holding the model files, as on Azure ML."""
    entry_script: Path = Path(DEFAULT_ENTRY_SCRIPT)
    """AZUREML_ENTRY_SCRIPT: a score.py with init() and run(raw_data[, request_headers])."""
    host: str = "0.0.0.0"
    port: int = 5001
    """5001 is the port of Azure ML's inference server, so probes and clients carry over."""
    workers: int = 0
    """Server processes; 0 means one per CPU the process may run on (scoring is CPU-bound)."""
    max_body_bytes: int = 10 * 1024 * 1024
    """Bodies over this are refused with 413 before they are read whole. 10 MiB fits ~100k float rows."""
    scoring_timeout_s: float = 60.0
    """A run() still going after this many seconds is interrupted and answered with 504."""
    access_log: bool = True
    """One JSON line per request on stdout."""
    model_name: str = "model"
    """The name the V2 protocol serves the model under (MODEL_NAME build arg, else 'model')."""
    build: BuildInfo = BuildInfo()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def opt(name: str) -> str | None:
            return env.get(name) or None

        build = BuildInfo(
            model_name=opt("MODEL_NAME"),
            model_version=opt("MODEL_VERSION"),
            model_sha256=opt("MODEL_SHA256"),
            git_commit=opt("GIT_COMMIT"),
            image_tag=opt("IMAGE_TAG"),
            build_id=opt("BUILD_ID"),
            release_id=opt("RELEASE_ID"),
        )
        try:
            settings = cls(
                model_dir=Path(env.get("AZUREML_MODEL_DIR", cls.model_dir)),
                entry_script=Path(env.get("AZUREML_ENTRY_SCRIPT", cls.entry_script)),
                host=env.get("MODEL_API_HOST", cls.host),
                port=int(env.get("MODEL_API_PORT", cls.port)),
                workers=int(env.get("MODEL_API_WORKERS", cls.workers)),
                max_body_bytes=int(env.get("MODEL_API_MAX_BODY_BYTES", cls.max_body_bytes)),
                scoring_timeout_s=float(env.get("MODEL_API_SCORING_TIMEOUT_S", cls.scoring_timeout_s)),
                access_log=env.get("MODEL_API_ACCESS_LOG", "true").lower() not in ("0", "false", "no"),
                model_name=build.model_name or cls.model_name,
                build=build,
            )
        except ValueError as e:
            raise SettingsError(f"bad model_api setting: {e}") from None
        # not 0 < t <= max also refuses nan and inf, which setitimer() would raise on at every request
        if settings.max_body_bytes <= 0 or not 0 < settings.scoring_timeout_s <= MAX_SCORING_TIMEOUT_S \
                or settings.workers < 0:
            raise SettingsError("MODEL_API_MAX_BODY_BYTES must be > 0, MODEL_API_WORKERS >= 0 and "
                                f"MODEL_API_SCORING_TIMEOUT_S in (0, {MAX_SCORING_TIMEOUT_S:g}] seconds")
        return settings

    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))
