"""The manual API, function-key auth (x-functions-key or ?code=): build, inspect, deploy, promote, roll back,
hold. Answers JSON; long work (a build, a rollout) answers 202 with the release id and runs elsewhere (the
build service, the work queue). The `shipbot` CLI is a client of exactly this surface (docs/api.md).
"""

import dataclasses
import json
from datetime import UTC, datetime

import azure.functions as func

from functions import common
from shared import errors, events, fleet, operations
from shared.releases import entries_to_json

bp = func.Blueprint()


@bp.function_name("releases")
@bp.route(route="releases", methods=["GET", "POST"])
@common.http_errors
def releases(req: func.HttpRequest) -> func.HttpResponse:
    engine = common.engine(req)
    if req.method == "GET":
        limit = req.params.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            return common.error(400, "bad_request", "limit must be a whole number from 1 to 1000")
        return common.answer(200, {"releases": [r.to_json() for r in engine.ledger.releases_since(limit=int(limit))]})
    doc = common.json_body(req)
    release, created = operations.build(engine, commit=common.field(doc, "commit"),
                                        model=common.field(doc, "model"), by=common.actor(req))
    return common.answer(202 if created else 200, {"release": release.to_json()})


@bp.function_name("release")
@bp.route(route="releases/{release_id}", methods=["GET"])
@common.http_errors
def release(req: func.HttpRequest) -> func.HttpResponse:
    return common.answer(200, common.engine(req).ledger.get_release(req.route_params["release_id"]).to_json())


@bp.function_name("hold")
@bp.route(route="releases/{release_id}/hold", methods=["POST", "DELETE"])
@common.http_errors
def hold(req: func.HttpRequest) -> func.HttpResponse:
    doc = common.json_body(req)
    held = operations.hold(common.engine(req), req.route_params["release_id"], by=common.actor(req),
                           reason=common.field(doc, "reason", default=""), held=req.method == "POST")
    return common.answer(200, held.to_json())


@bp.function_name("override")
@bp.route(route="releases/{release_id}/override", methods=["POST"])
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
@common.http_errors
def override(req: func.HttpRequest, jobs: common.Jobs) -> func.HttpResponse:
    """Let a release the quality gate failed go on, with a reason: 200 with the release, or 202 with the rollout
    of the first environment it queued."""
    doc = common.json_body(req, optional=False)
    release, job = operations.override(common.engine(req), req.route_params["release_id"], by=common.actor(req),
                                       reason=common.field(doc, "reason", default=""))
    if job is None:
        return common.answer(200, {"release": release.to_json(), "job": None})
    response = _queued(req, jobs, job)
    return common.answer(202, {**json.loads(response.get_body()), "release": release.to_json()})


@bp.function_name("environments")
@bp.route(route="environments", methods=["GET"])
@common.http_errors
def environments(req: func.HttpRequest) -> func.HttpResponse:
    return common.answer(200, {"environments": [
        {**env.to_json(), "url": url, "running": running} for env, running, url in
        operations.environments(common.engine(req))]})


@bp.function_name("deploy")
@bp.route(route="environments/{environment}/deploy", methods=["POST"])
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
@common.http_errors
def deploy(req: func.HttpRequest, jobs: common.Jobs) -> func.HttpResponse:
    doc = common.json_body(req, optional=False)
    job = operations.deploy(common.engine(req), req.route_params["environment"],
                            release_id=common.field(doc, "release_id"), digest=common.field(doc, "digest"),
                            by=common.actor(req), reason=common.field(doc, "reason", default=""),
                            force=common.field(doc, "force", bool, default=False))
    return _queued(req, jobs, job)


@bp.function_name("promote")
@bp.route(route="environments/{environment}/promote", methods=["POST"])
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
@common.http_errors
def promote(req: func.HttpRequest, jobs: common.Jobs) -> func.HttpResponse:
    """Into the environment the newest release verified on the one before it (or the release named)."""
    doc = common.json_body(req)
    job = operations.promote(common.engine(req), to=req.route_params["environment"],
                             release_id=common.field(doc, "release_id"), by=common.actor(req),
                             reason=common.field(doc, "reason", default=""),
                             force=common.field(doc, "force", bool, default=False))
    return _queued(req, jobs, job)


@bp.function_name("rollback")
@bp.route(route="environments/{environment}/rollback", methods=["POST"])
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
@common.http_errors
def rollback(req: func.HttpRequest, jobs: common.Jobs) -> func.HttpResponse:
    doc = common.json_body(req)
    job = operations.rollback(common.engine(req), req.route_params["environment"], by=common.actor(req),
                              reason=common.field(doc, "reason", default=""))
    return _queued(req, jobs, job)


def _queued(req: func.HttpRequest, jobs: common.Jobs, job) -> func.HttpResponse:
    job = dataclasses.replace(job, app=common.engine(req).config.app)  # the work queue hands it to its engine
    jobs.set([job.to_message()])
    return common.answer(202, {"job": dataclasses.asdict(job), "release_id": job.release_id or None})


@bp.function_name("approve")
@bp.route(route="environments/{environment}/approvals", methods=["POST"])
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
@common.http_errors
def approve(req: func.HttpRequest, jobs: common.Jobs) -> func.HttpResponse:
    """Approve a release for an environment whose chain entry says `approval: true`: 200 with the release, or 202
    with the rollout it queued when the environment takes it at once."""
    doc = common.json_body(req, optional=False)
    release_id = common.field(doc, "release_id")
    if not release_id:
        raise errors.InvalidEvent("give the release_id to approve")
    release, job = operations.approve(common.engine(req), req.route_params["environment"], release_id,
                                      by=common.actor(req), reason=common.field(doc, "reason", default=""))
    if job is None:
        return common.answer(200, {"release": release.to_json(), "job": None})
    response = _queued(req, jobs, job)
    return common.answer(202, {**json.loads(response.get_body()), "release": release.to_json()})


@bp.function_name("apps")
@bp.route(route="apps", methods=["GET"])
@common.http_errors
def apps(req: func.HttpRequest) -> func.HttpResponse:
    """Every application of the fleet with its environments, in chain order: what `shipbot status` shows."""
    def one(app: fleet.App, engine) -> dict:
        return {"name": app.name, "image": engine.config.repository, "models": list(app.models),
                "source": app.source.model_dump() if app.source else None, "environments": [
                    {**env.to_json(), "rule": engine.spec(env.name).rule, "url": url, "running": running,
                     "waiting": engine.waiting(env.name)}
                    for env, running, url in operations.environments(engine)]}

    return common.answer(200, {"apps": common.bot().across(one)})


@bp.function_name("environment_history")
@bp.route(route="environments/{environment}/history", methods=["GET"])
@common.http_errors
def environment_history(req: func.HttpRequest) -> func.HttpResponse:
    """Every history entry of an environment, oldest first, the archived ones included."""
    name = req.route_params["environment"]
    entries = operations.environment_history(common.engine(req), name)
    return common.answer(200, {"environment": name, "history": entries_to_json(tuple(entries))})


@bp.function_name("fleet")
@bp.route(route="fleet", methods=["GET", "PUT"])
@common.http_errors
def fleet_file(req: func.HttpRequest) -> func.HttpResponse:
    """GET: the fleet in force (?version=N: an earlier one). PUT: apply a fleet file (the body, YAML),
    validated whole: 400 with every problem, and nothing applied."""
    bot = common.bot()
    if req.method == "PUT":
        body = req.get_body()
        if len(body) > fleet.MAX_BYTES:
            raise events.TooLarge(f"the fleet file is too large: {len(body)} bytes, the limit is {fleet.MAX_BYTES}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.InvalidEvent("the fleet file must be UTF-8 text") from None
        applied = operations.apply_fleet(bot.ledger, text, at=datetime.now(UTC), by=common.actor(req), reason=req.params.get("reason", ""))
        return common.answer(200, {**applied.summary(), "apps": [app.name for app in fleet.parse(text).apps]})
    version = req.params.get("version", "")
    if version and not version.isdigit():
        return common.error(400, "bad_request", "version must be a whole number")
    applied, parsed = operations.fleet_version(bot.ledger, bot.default, int(version or 0), now=datetime.now(UTC))
    return common.answer(200, {**applied.to_json(), "apps": [app.name for app in parsed.apps]})


@bp.function_name("fleet_history")
@bp.route(route="fleet/history", methods=["GET"])
@common.http_errors
def fleet_history(req: func.HttpRequest) -> func.HttpResponse:
    return common.answer(200, {"versions": [v.summary() for v in common.bot().ledger.list_fleet()]})
