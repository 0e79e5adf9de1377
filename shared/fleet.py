"""The fleet: the applications one ShipBot ships, each through its own chain of environments. Data, not code.

A fleet file (YAML; `shipbot apply -f FILE`) lists the applications:

    apps:
      - name: diabetes
        source: {repository: https://github.com/contoso/diabetes, branch: main,
                 webhook_secret: "setting:SHIPBOT_GITHUB_SECRET"}
        models: [diabetes]                 # the model names it follows; [] for every one
        model_source: {kind: mlflow, alias: champion}  # default {kind: blob}: the models container
        evaluate: {data: "model:eval/test.csv", label: target, metric: rmse}  # a quality gate (docs/models.md)
        image: shipbot/diabetes            # its repository in the registry
        environments:                      # in order: each takes releases from the one before
          - {name: dev, target: {kind: local, port: 8091}, rule: on_green}
          - {name: qa, target: {kind: local, port: 8092}, rule: manual, approval: true, soak: 30m}
          - name: prod
            target: {kind: kubernetes, namespace: prod, deployment: app, container: model-api, service: "app:80"}
            rule: schedule
            schedule: "0 0 2 * * *"
            time_zone: Europe/Paris
            freeze: [{start: "2026-12-24T00:00:00+01:00", end: "2026-12-27T00:00:00+01:00", reason: holidays}]

Rules move a release into an environment: `on_green` (as soon as it is verified in the one before; for the
first environment, its smoke test), `schedule` (NCRONTAB in `time_zone`; a missed slot fires once), `manual`.
Gates on top: `soak` (a minimum time in the environment before), `approval` (`shipbot approve`), `freeze`
windows during which nothing automatic deploys.

`parse(text)` validates a file whole: every problem is reported with its line and key (FleetError), and
nothing is applied. Secrets are never written inline: `webhook_secret` is a reference, `setting:NAME` (an app
setting, a Key Vault reference in Azure). `single(settings)` is the fleet today's
app settings describe: one application, staging then production.

Pure. No I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import urllib.parse
import zoneinfo
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared import errors, manifest, ncrontab

NAME = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
REFERENCE = re.compile(r"setting:[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_BYTES = 1 << 20
CLUSTER = (r"^(|/subscriptions/[^/]+/resource[Gg]roups/[^/]+/providers/Microsoft\.ContainerService/"
           r"managedClusters/[^/]+)$")  # an AKS cluster's ARM id, as SHIPBOT_AKS_RESOURCE_ID


class FleetError(errors.InvalidEvent):
    """The fleet file cannot be applied: `problems` lists each one, `line N, key: why`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"the fleet file has {len(problems)} problem{'s' * (len(problems) != 1)}: "
                         + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LocalTarget(_Strict):
    kind: Literal["local"]
    port: int = Field(ge=1024, le=65535)


class KubernetesTarget(_Strict):
    kind: Literal["kubernetes"]
    namespace: str = Field(pattern=NAME)
    deployment: str = Field(pattern=NAME)
    container: str = Field(default="model-api", pattern=NAME)
    service: str = Field(default="app:80", pattern=r"^[a-z0-9-]+:[a-z0-9-]+$")
    cluster: str = Field(default="", pattern=CLUSTER)  # the AKS cluster's ARM id; "": the bot's own

    @property
    def spec(self) -> str:
        return f"{self.namespace}/{self.deployment}/{self.container}@{self.service}"


Target = Annotated[LocalTarget | KubernetesTarget, Field(discriminator="kind")]


class Freeze(_Strict):
    start: dt.datetime
    end: dt.datetime
    reason: str = ""

    @pydantic.field_validator("start", "end", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        moment = value if isinstance(value, dt.datetime) else None
        if isinstance(value, str):
            try:
                moment = dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO 8601 time") from None
        if moment is None or moment.tzinfo is None:
            raise ValueError("a freeze window's times need their UTC offset, e.g. 2026-12-24T00:00:00+01:00")
        return moment

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.end <= self.start:
            raise ValueError("a freeze window ends after it starts")
        return self

    def covers(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end


class Environment(_Strict):
    name: str = Field(pattern=NAME)
    target: Target
    rule: Literal["on_green", "schedule", "manual"]
    schedule: str | None = None
    time_zone: str = "UTC"
    soak: str | None = None       # e.g. 30m, 2h, 1d: the least time a release spends in the environment before
    approval: bool = False        # `shipbot approve APP ENV RELEASE` before anything automatic deploys it here
    freeze: list[Freeze] = []

    @pydantic.field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            ncrontab.parse(value)  # its ValueError names what is wrong
        return value

    @pydantic.field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Paris, UTC)") from None
        return value

    @pydantic.field_validator("soak")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not _DURATION.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not a duration: a number and s, m, h or d (e.g. 30m)")
        return value

    @pydantic.model_validator(mode="after")
    def _rule(self) -> Environment:
        if (self.rule == "schedule") != (self.schedule is not None):
            raise ValueError("`schedule` goes with rule: schedule, and rule: schedule needs one")
        return self

    @property
    def soak_seconds(self) -> float:
        if self.soak is None:
            return 0.0
        number, unit = _DURATION.fullmatch(self.soak.strip()).groups()  # type: ignore[union-attr]
        return float(int(number) * _UNITS[unit])

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def frozen(self, moment: dt.datetime) -> Freeze | None:
        """The freeze window `moment` falls in, if any."""
        return next((window for window in self.freeze if window.covers(moment)), None)


class Source(_Strict):
    repository: str = Field(min_length=1)
    branch: str = Field(default="main", min_length=1)
    webhook_secret: str | None = None  # a reference, never the secret

    @pydantic.field_validator("webhook_secret")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is not None and not REFERENCE.fullmatch(value):
            raise ValueError("write a reference to the secret, `setting:NAME` (an app setting; in Azure a Key "
                             "Vault reference), never the secret itself")
        return value


class ModelSource(_Strict):
    """Where an application's models come from: the models container (`blob`, a version per upload) or an MLflow
    model registry (`mlflow`: Azure ML's, or the local stack's), where a version is released when it is
    registered (`alias`/`stage` absent), when `alias` points at it, or when it is the highest in `stage`."""

    kind: Literal["blob", "mlflow"] = "blob"
    alias: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,255}$")
    stage: Literal["Staging", "Production"] | None = None

    @pydantic.model_validator(mode="after")
    def _selector(self) -> ModelSource:
        if self.kind == "blob" and (self.alias or self.stage):
            raise ValueError("alias and stage choose a registry version: they go with kind: mlflow")
        if self.alias and self.stage:
            raise ValueError("name an alias or a stage, not both")
        return self


class App(_Strict):
    name: str = Field(pattern=NAME)
    source: Source | None = None
    models: list[str] = []
    model_source: ModelSource = ModelSource()
    evaluate: manifest.Evaluate | None = None  # the quality gate of images whose shipbot.toml declares none
    image: str = Field(pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
    environments: list[Environment] = Field(min_length=1)

    def environment(self, name: str) -> Environment:
        try:
            return next(env for env in self.environments if env.name == name)
        except StopIteration:
            raise errors.NotFound(f"app {self.name} has no environment {name!r}; it has "
                                  f"{', '.join(env.name for env in self.environments)}") from None

    def before(self, name: str) -> Environment | None:
        """The environment a release comes from on its way into `name` (None for the first)."""
        names = [env.name for env in self.environments]
        index = names.index(self.environment(name).name)
        return self.environments[index - 1] if index else None


class Fleet(_Strict):
    apps: list[App] = Field(min_length=1)

    def app(self, name: str | None = None) -> App:
        """The named application; with no name, the only one (NotFound otherwise)."""
        if name is None:
            if len(self.apps) == 1:
                return self.apps[0]
            raise errors.NotFound(f"there are {len(self.apps)} applications: name one "
                                  f"({', '.join(app.name for app in self.apps)}) with --app NAME or ?app=NAME")
        try:
            return next(app for app in self.apps if app.name == name)
        except StopIteration:
            raise errors.NotFound(f"no application {name!r}; known: "
                                  f"{', '.join(app.name for app in self.apps)}") from None

    # -- routing ----------------------------------------------------------------------------------------------
    def following(self, model_name: str, kind: str = "blob") -> list[App]:
        """The applications whose models (from a source of `kind`) include `model_name`; one that names no
        model follows every model of its source."""
        return [app for app in self.apps if app.model_source.kind == kind and (model_name in app.models
                                                                               or not app.models)]

    def of_source(self, repository: str, branch: str) -> App | None:
        return next((app for app in self.apps if app.source is not None
                     and same_repository(app.source.repository, repository) and app.source.branch == branch), None)

    def naming(self, repository: str) -> list[App]:
        """The applications whose source is `repository`, on any branch."""
        return [app for app in self.apps if app.source is not None and same_repository(app.source.repository, repository)]

    def of_image(self, repository: str) -> App | None:
        return next((app for app in self.apps if app.image == repository), None)


def parse(text: str) -> Fleet:
    """The fleet a file describes, validated whole; FleetError lists every problem with its line and key."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise FleetError([f"the file is larger than {MAX_BYTES} bytes"])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "the file"
        raise FleetError([f"{where}: not YAML: {getattr(e, 'problem', None) or e}"]) from None
    if not isinstance(raw, dict):
        raise FleetError(["line 1: a fleet file is a mapping with `apps:`, a list of applications"])
    try:
        fleet = Fleet.model_validate(raw)
    except pydantic.ValidationError as e:
        raise FleetError([_problem(node, tuple(err["loc"]), _why(err), raw) for err in e.errors()]) from None
    problems = [_problem(node, loc, why, raw) for loc, why in _conflicts(fleet)]
    if problems:
        raise FleetError(problems)
    return fleet


def _conflicts(fleet: Fleet) -> list[tuple[tuple[Any, ...], str]]:
    """What no single application can see: names, sources, images and targets two of them share."""
    found: list[tuple[tuple[Any, ...], str]] = []
    seen: dict[Any, str] = {}

    def once(key: Any, loc: tuple[Any, ...], what: str, owner: str) -> None:
        if key in seen:
            found.append((loc, f"{what} is {seen[key]}'s already"))
        else:
            seen[key] = owner

    for i, app in enumerate(fleet.apps):
        once(("app", app.name), ("apps", i, "name"), f"the name {app.name}", f"application {i + 1}")
        once(("image", app.image), ("apps", i, "image"), f"the image repository {app.image}", app.name)
        if app.source is not None:
            once(("source", repository_key(app.source.repository), app.source.branch), ("apps", i, "source"),
                 f"{app.source.repository} branch {app.source.branch}", app.name)
        names: set[str] = set()
        for j, env in enumerate(app.environments):
            if env.name in names:
                found.append((("apps", i, "environments", j, "name"),
                              f"{env.name} is twice in {app.name}'s chain: a chain is a line of environments, "
                              "each once (no cycles)"))
            names.add(env.name)
            target = env.target
            key = (("port", target.port) if isinstance(target, LocalTarget)
                   else ("kubernetes", target.cluster, target.namespace, target.deployment))
            once(key, ("apps", i, "environments", j, "target"), f"this target ({_show(target)})",
                 f"{app.name}/{env.name}")
    return found


def single(settings: Any) -> Fleet:
    """Today's app settings as a fleet of one: SHIPBOT_GIT_REPO on SHIPBOT_RELEASE_BRANCH, SHIPBOT_MODEL_NAME
    (any model when unset), SHIPBOT_REPOSITORY, and staging (on green) then production (the nightly
    schedule), on local ports or Kubernetes namespaces as the deployer's target says."""
    cloud = settings.cloud
    kubernetes = settings.target_of("deployer") == "azure"

    def target(name: str) -> LocalTarget | KubernetesTarget:
        if kubernetes:
            namespace = cloud.staging_namespace if name == "staging" else cloud.production_namespace
            return KubernetesTarget(kind="kubernetes", namespace=namespace, deployment=cloud.deployment,
                                    container=cloud.container, service=cloud.service)
        return LocalTarget(kind="local", port=settings.staging_port if name == "staging" else settings.production_port)

    # No webhook_secret: the provider's own setting (SHIPBOT_GITHUB_SECRET, SHIPBOT_AZURE_DEVOPS_SECRET) checks it.
    source = Source(repository=settings.git_repo, branch=settings.release_branch) if settings.git_repo else None
    return Fleet(apps=[App(
        name=getattr(settings, "app_name", "") or "app", source=source,
        models=[settings.model_name] if settings.model_name else [], image=settings.repository,
        model_source=ModelSource(kind=getattr(settings, "model_source", "blob") or "blob",
                                 alias=getattr(settings, "model_alias", None) or None,
                                 stage=getattr(settings, "model_stage", None) or None),
        environments=[Environment(name="staging", target=target("staging"), rule="on_green"),
                      Environment(name="production", target=target("production"), rule="schedule",
                                  schedule=getattr(settings, "promotion_schedule", "") or "0 0 2 * * *")])])


# -- where a problem is -------------------------------------------------------------------------------------------
def _problem(root: yaml.Node | None, loc: tuple[Any, ...], why: str, raw: Any) -> str:
    node, key = _locate(root, loc, raw)
    line = node.start_mark.line + 1 if node is not None else 1
    return f"line {line}, {key or 'the file'}: {why}"


def _locate(root: yaml.Node | None, loc: tuple[Any, ...], raw: Any) -> tuple[yaml.Node | None, str]:
    """The YAML node a validation error's `loc` points at (as deep as the file has it), and the key in words:
    apps[diabetes].environments[qa].target.port."""
    node, value, words = root, raw, ""
    for part in loc:
        if isinstance(part, int) and isinstance(node, yaml.SequenceNode) and part < len(node.value):
            node = node.value[part]
            value = value[part] if isinstance(value, list) and part < len(value) else None
            label = value.get("name") if isinstance(value, dict) and isinstance(value.get("name"), str) else part
            words += f"[{label}]"
        elif isinstance(part, str) and isinstance(node, yaml.MappingNode):
            if isinstance(value, dict) and value.get("kind") == part and part not in value:
                continue  # a union's tag (the target's kind), not a key of the file
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            words += f".{part}" if words else part
            if match is None:
                break  # a missing key: the mapping that lacks it
            node = match[1]
            value = value.get(part) if isinstance(value, dict) else None
        # anything else (a union's tag, e.g. `local`) names no node of the file
    return node, words


def _why(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required"
    if error["type"] == "union_tag_invalid":
        return f"unknown target kind {error.get('input', {}).get('kind')!r}: local or kubernetes"
    if error["type"] == "union_tag_not_found":
        return "a target needs its kind: local or kubernetes"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message if error["type"] == "value_error" else f"{message} (got {error.get('input')!r})"


def _show(target: LocalTarget | KubernetesTarget) -> str:
    if isinstance(target, LocalTarget):
        return f"local port {target.port}"
    return f"Deployment {target.namespace}/{target.deployment}"


def repository_key(repository: str) -> str:
    """What names a git repository whichever way it is written: `https://GitHub.com/o/r.git/` and
    `http://github.com/o/r` are one repository, `file:///srv/app.git` and `/srv/app.git` another, and Azure
    Repos' `https://org.visualstudio.com/[DefaultCollection/]p/_git/r` is `https://dev.azure.com/org/p/_git/r`."""
    text = repository.strip()
    if text.startswith("file://"):
        text = text[len("file://"):]
    parts = urllib.parse.urlsplit(text)
    if parts.scheme in ("http", "https") and parts.hostname:
        host, path = parts.hostname.lower(), parts.path.lower()
        if host.endswith(".visualstudio.com"):  # Azure DevOps' older host form, as old service hooks send it
            path = "/" + host.removesuffix(".visualstudio.com") + path.removeprefix("/defaultcollection")
            host = "dev.azure.com"
        port = "" if parts.port in (None, 80, 443) else f":{parts.port}"
        text = f"{host}{port}{path}"
    return text.rstrip("/").removesuffix(".git")


def same_repository(a: str, b: str) -> bool:
    return repository_key(a) == repository_key(b)


@dataclasses.dataclass(frozen=True, slots=True)
class Version:
    """One applied fleet file, as the ledger keeps it: every version stays readable."""

    version: int          # 1, 2, ...; 0 is the fleet today's app settings describe (nothing applied)
    text: str
    applied_by: str
    applied_at: dt.datetime
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "text": self.text, "applied_by": self.applied_by,
                "applied_at": self.applied_at.isoformat(), "reason": self.reason}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Version:
        return cls(version=int(doc["version"]), text=str(doc["text"]), applied_by=str(doc["applied_by"]),
                   applied_at=dt.datetime.fromisoformat(doc["applied_at"]), reason=str(doc.get("reason", "")))

    def summary(self) -> dict[str, Any]:
        """What `shipbot config --history` lists: everything but the text."""
        return {k: v for k, v in self.to_json().items() if k != "text"}


def dump(fleet: Fleet) -> str:
    """A fleet as a YAML file `parse` reads back equal (what `shipbot config` shows for version 0)."""
    return yaml.safe_dump(fleet.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
