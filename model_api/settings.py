"""model_api's configuration: one frozen dataclass, read from the environment in exactly one place.

The Azure ML names (AZUREML_MODEL_DIR, AZUREML_ENTRY_SCRIPT) are kept so that an Azure ML deployment's
environment works unchanged; everything of our own is prefixed MODEL_API_. Build metadata (model name,
version, sha256, commit, image tag, build id, release id) is baked into the image by build args; a value
that was not given stays None and /version reports null for it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any
from pathlib import Path

DEFAULT_ENTRY_SCRIPT = str(Path(__file__).with_name("default_score.py"))
MAX_SCORING_TIMEOUT_S = 24 * 3600.0


FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


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
    batch_max_requests: int = 32
    """Dynamic batching: at most this many waiting /score requests go to the entry script's run_batch()
    in one call (1 turns batching off). 32 is the most a 2-core server under a 32-connection load holds."""
    batch_max_bytes: int = 1024 * 1024
    """...and at most this many body bytes; a bigger body is scored on its own. 1 MiB is ~10k rows."""
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
        def number(name: str, parse: type[int] | type[float], default: float, ok: Callable[[float], bool],
                   rule: str) -> Any:
            raw = env.get(name)
            if raw is None:
                return default
            try:
                value = parse(raw)
            except ValueError:
                value = None
            # `ok` is written so that nan and inf fail it: setitimer() would raise on them at every request
            if value is None or not ok(value):
                raise SettingsError(f"{name}={raw!r}: must be {rule}")
            return value

        flag = env.get("MODEL_API_ACCESS_LOG", "true").strip().lower()
        if flag not in FLAGS:
            raise SettingsError(f"MODEL_API_ACCESS_LOG={flag!r}: must be one of {', '.join(sorted(FLAGS))}")
        settings = cls(
            model_dir=Path(env.get("AZUREML_MODEL_DIR", cls.model_dir)),
            entry_script=Path(env.get("AZUREML_ENTRY_SCRIPT", cls.entry_script)),
            host=env.get("MODEL_API_HOST", cls.host),
            port=number("MODEL_API_PORT", int, cls.port, lambda v: 0 < v < 65536, "a port, 1-65535"),
            workers=number("MODEL_API_WORKERS", int, cls.workers, lambda v: v >= 0, "0 (one per CPU) or more"),
            max_body_bytes=number("MODEL_API_MAX_BODY_BYTES", int, cls.max_body_bytes, lambda v: v > 0,
                                  "a positive number of bytes"),
            scoring_timeout_s=number("MODEL_API_SCORING_TIMEOUT_S", float, cls.scoring_timeout_s,
                                     lambda v: 0 < v <= MAX_SCORING_TIMEOUT_S,
                                     f"seconds, more than 0 and at most {MAX_SCORING_TIMEOUT_S:g}"),
            batch_max_requests=number("MODEL_API_BATCH_MAX_REQUESTS", int, cls.batch_max_requests,
                                      lambda v: v >= 1, "1 (no batching) or more"),
            batch_max_bytes=number("MODEL_API_BATCH_MAX_BYTES", int, cls.batch_max_bytes, lambda v: v > 0,
                                   "a positive number of bytes"),
            access_log=FLAGS[flag],
            model_name=build.model_name or cls.model_name,
            build=build,
        )
        return settings

    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))
