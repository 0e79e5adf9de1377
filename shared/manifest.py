"""The application manifest: `shipbot.toml` at the root of the app's repository, versioned with its code.

It says how to build the release image and how to smoke-test it. Three shapes, recognised in this order:

    own image   `[build]` (dockerfile, context, target, model_path), or no manifest and a Dockerfile at the root:
                the app's own Dockerfile builds the image, the model version's folder copied into the context
    score.py    `[serve]` (entry_script, requirements): an Azure ML scoring script, served by ShipBot's
                model_api image around it
    model only  neither: today's default, model_api serving the model file

`[smoke]` is the contract the smoke test and every rollout's verification check (port, readiness path, the
sample request and what must come back, an optional identity route); its defaults depend on the shape.
`[evaluate]` is the quality gate's data set and metric (shared/evaluation.py).

`load(repo_root)` reads and validates it (pydantic: unknown keys and wrong types are refused) and checks its
paths against the checkout: relative, inside the repository, not a symlink out of it. A bad manifest is a
ManifestError naming the file, the key and its line, which fails the release and nothing else.
`Manifest.fingerprint(repo_root)` hashes the effective manifest and, for the own-image shape, the
Dockerfile: it goes into the release's recipe, so that a commit changing either makes a new release.
`pip_requirements(repo_root, serve)` turns a score.py app's requirements (a requirements.txt, or an Azure ML
/ conda environment file) into what pip installs, refusing an entry pip cannot install by name.

Reads files under the repository; no network.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from shared import contract, errors

FILE = "shipbot.toml"
Shape = Literal["image", "score", "model"]


class ManifestError(errors.PermanentError):
    """The manifest cannot be used as written: the message names the file, the key and the line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Build(_Strict):
    dockerfile: str = "Dockerfile"
    context: str = "."
    target: str | None = None
    model_path: str = "model/"


class Serve(_Strict):
    entry_script: str
    requirements: str | None = None


class Smoke(_Strict):
    port: int | None = Field(default=None, ge=1, le=65535)
    ready_path: str | None = None
    score_path: str = "/score"
    request: str = "sample-request.json"        # in the repository, else in the model's folder
    expect_status: int = Field(default=200, ge=100, le=599)
    expect_json: str | None = None               # a file whose JSON must come back (numbers within tolerance)
    tolerance: float = Field(default=1e-6, ge=0)
    expect_keys: list[str] = Field(default_factory=list)  # keys the answer's JSON object must have
    identity_path: str | None = None             # JSON that must name the release id or the commit
    ready_seconds: float = Field(default=60.0, gt=0)
    request_seconds: float = Field(default=10.0, gt=0)


class Evaluate(_Strict):
    """The quality gate (shared/evaluation.py): the candidate's metric on a data set of the repository, against
    production's on the same set."""

    data: str
    label: str = Field(min_length=1)
    metric: Literal["rmse", "mae", "r2", "accuracy", "f1", "roc_auc", "log_loss"]
    direction: Literal["higher", "lower"] | None = None  # None: the metric's own
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    batch: int = Field(default=500, ge=1, le=10_000)
    seconds: float = Field(default=120.0, gt=0, le=3600)


class _File(_Strict):
    build: Build | None = None
    serve: Serve | None = None
    smoke: Smoke = Smoke()
    evaluate: Evaluate | None = None


class Manifest(BaseModel):
    """The effective manifest: the shape and every setting, defaults filled in."""

    model_config = ConfigDict(frozen=True)

    shape: Shape
    build: Build | None
    serve: Serve | None
    smoke: Smoke
    source: str  # where it came from: "shipbot.toml", or what the defaults were read from
    evaluate: Evaluate | None = None

    def fingerprint(self, repo_root: Path) -> str:
        """sha256 of the effective manifest and, for an own image, the Dockerfile's bytes: part of the recipe."""
        # [evaluate] counts once declared; without it the fingerprint is what it was before the gate existed.
        left_out = {"source"} | ({"evaluate"} if self.evaluate is None else set())
        digest = hashlib.sha256(json.dumps(self.model_dump(exclude=left_out), sort_keys=True).encode())
        if self.build is not None:
            digest.update(_inside(repo_root, self.build.dockerfile, ("build", "dockerfile")).read_bytes())
        return digest.hexdigest()


def load(repo_root: Path) -> Manifest:
    """The manifest of the checkout at `repo_root` (its shipbot.toml, or the defaults its files imply)."""
    path = repo_root / FILE
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ManifestError(f"{FILE} must be a regular file of the repository")
    if not path.exists():
        if (repo_root / "Dockerfile").is_file():
            return _effective(repo_root, _File(build=Build()), source="Dockerfile (no shipbot.toml)", text="")
        return _effective(repo_root, _File(), source="defaults (no shipbot.toml)", text="")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{FILE} is not valid TOML: {e}") from None
    try:
        parsed = _File.model_validate(raw)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        loc = tuple(str(part) for part in first["loc"])
        raise ManifestError(f"{FILE}, {_key(loc)} (line {_line(text, loc)}): {_why(first)}") from None
    return _effective(repo_root, parsed, source=FILE, text=text)


def _effective(repo_root: Path, parsed: _File, *, source: str, text: str) -> Manifest:
    def fail(loc: tuple[str, ...], why: str) -> ManifestError:
        where = f"{FILE}, {_key(loc)} (line {_line(text, loc)})" if text else source
        return ManifestError(f"{where}: {why}")

    if parsed.build is not None and parsed.serve is not None:
        raise fail(("serve",), "[build] and [serve] exclude each other: an app brings its own Dockerfile, "
                               "or a score.py that ShipBot serves, not both")
    smoke = parsed.smoke
    if parsed.build is not None:
        build = parsed.build
        dockerfile = _checked(repo_root, build.dockerfile, ("build", "dockerfile"), fail, kind="file")
        _checked(repo_root, build.context, ("build", "context"), fail, kind="dir")
        _relative(build.model_path, ("build", "model_path"), fail)
        port = smoke.port or _exposed_port(dockerfile)
        if port is None:
            raise fail(("smoke", "port"), f"{build.dockerfile} EXPOSEs no port: say which one the app serves "
                                          "as [smoke] port")
        smoke = smoke.model_copy(update={"port": port, "ready_path": smoke.ready_path or "/"})
        shape: Shape = "image"
    else:
        if parsed.serve is not None:
            _checked(repo_root, parsed.serve.entry_script, ("serve", "entry_script"), fail, kind="file")
            if parsed.serve.requirements is not None:
                _checked(repo_root, parsed.serve.requirements, ("serve", "requirements"), fail, kind="file")
        smoke = smoke.model_copy(update={  # model_api's own contract
            "port": smoke.port or contract.MODEL_API_PORT, "ready_path": smoke.ready_path or "/readyz",
            "identity_path": smoke.identity_path or "/version",
            "expect_json": smoke.expect_json or "sample-response.json"})
        shape = "score" if parsed.serve is not None else "model"
    for key in ("ready_path", "score_path", "identity_path"):
        value = getattr(smoke, key)
        if value is not None and not value.startswith("/"):
            raise fail(("smoke", key), f"{value!r} is not a path: it starts with /")
    for key in ("request", "expect_json"):
        if getattr(smoke, key) is not None:
            _relative(getattr(smoke, key), ("smoke", key), fail)
    if parsed.evaluate is not None:
        data = parsed.evaluate.data
        if data.startswith("model:"):  # a file of the model version: read when the gate runs
            _relative(data.removeprefix("model:"), ("evaluate", "data"), fail)
        else:
            _checked(repo_root, data, ("evaluate", "data"), fail, kind="file")
    return Manifest(shape=shape, build=parsed.build, serve=parsed.serve, smoke=smoke, source=source,
                    evaluate=parsed.evaluate)


def _relative(value: str, loc: tuple[str, ...], fail) -> PurePosixPath:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise fail(loc, f"{value!r} must be a relative path inside the repository")
    return path


def _checked(repo_root: Path, value: str, loc: tuple[str, ...], fail, *, kind: str) -> Path:
    _relative(value, loc, fail)
    try:
        path = _inside(repo_root, value, loc)
    except ManifestError as e:
        raise fail(loc, str(e)) from None
    if kind == "file" and not path.is_file():
        raise fail(loc, f"{value} is not a file of the repository")
    if kind == "dir" and not path.is_dir():
        raise fail(loc, f"{value} is not a folder of the repository")
    return path


def _inside(repo_root: Path, value: str, loc: tuple[str, ...]) -> Path:
    """repo_root/value, refused when it (or a symlink on the way) leads out of the repository."""
    root = repo_root.resolve()
    path = (repo_root / value).resolve()
    if path != root and root not in path.parents:
        raise ManifestError(f"{value} leads out of the repository (a symlink?)")
    return path


# A conda dependency pip can install too: a name, optionally `=version` (conda's pin) or a pip-style specifier.
_CONDA_PLAIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:=\s*([A-Za-z0-9.*+!_-]+)|((?:==|>=|<=|~=|!=|<|>)\s*\S+))?")
_NOT_PACKAGES = {"python", "pip"}  # the image brings its own


def pip_requirements(repo_root: Path, serve: Serve) -> list[str]:
    """The pip requirements of a score.py app: a requirements.txt as written, or an environment file's
    `dependencies` (plain `name` / `name=version` entries) and its `pip:` list. ManifestError names an entry
    that pip cannot install (a channel-qualified or build-pinned conda package, a nested list)."""
    if serve.requirements is None:
        return []
    path = _inside(repo_root, serve.requirements, ("serve", "requirements"))
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() not in (".yml", ".yaml"):
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    import yaml  # here: only a score.py app with an environment file needs it

    where = f"{FILE}, [serve] requirements: {serve.requirements}"
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ManifestError(f"{where} is not YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("dependencies", []), list):
        raise ManifestError(f"{where}: expected a conda environment with a `dependencies` list")
    out: list[str] = []
    for entry in doc.get("dependencies", []):
        if isinstance(entry, dict) and set(entry) == {"pip"} and isinstance(entry["pip"], list):
            out += [str(item).strip() for item in entry["pip"] if str(item).strip()]
            continue
        match = _CONDA_PLAIN.fullmatch(str(entry).strip()) if isinstance(entry, str) else None
        if match is None:
            raise ManifestError(f"{where}: dependency {entry!r} is not one pip can install (use a plain "
                                "`name` or `name=version`, or list it under `pip:`)")
        name, conda_pin, specifier = match.groups()
        if name.lower() in _NOT_PACKAGES:
            continue
        out.append(f"{name}=={conda_pin}" if conda_pin else f"{name}{specifier or ''}")
    return out


_EXPOSE = re.compile(r"^\s*EXPOSE\s+(\d+)", re.IGNORECASE | re.MULTILINE)


def _exposed_port(dockerfile: Path) -> int | None:
    match = _EXPOSE.search(dockerfile.read_text(encoding="utf-8", errors="replace"))
    return int(match[1]) if match else None


def _key(loc: tuple[str, ...]) -> str:
    table, *rest = loc
    return f"[{table}] {'.'.join(rest)}" if rest else f"[{table}]"


def _why(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required"
    return f"{error['msg']} (got {error.get('input')!r})"


def _line(text: str, loc: tuple[str, ...]) -> int:
    """The line of a key in the TOML text (that of its table when the key is not written there)."""
    lines = text.splitlines()
    table, *rest = loc
    start = next((n for n, line in enumerate(lines) if re.fullmatch(rf"\s*\[{re.escape(table)}\]\s*(#.*)?", line)),
                 None)
    if start is None:
        return 1
    key = next((part for part in rest if not part.isdigit()), None)
    if key is not None:
        for n in range(start + 1, len(lines)):
            if re.match(r"\s*\[", lines[n]):
                break
            if re.match(rf"\s*{re.escape(key)}\s*=", lines[n]):
                return n + 1
    return start + 1
