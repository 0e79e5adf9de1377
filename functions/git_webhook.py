"""Git push webhooks -> build that commit with the current model.

`POST /api/webhooks/github` is authenticated by its X-Hub-Signature-256 HMAC (required) and
`POST /api/webhooks/azure-devops` by the service hook's Basic-auth secret; both are anonymous at the host
level because the signature is the credential. A push to another branch, or a ping, is answered and ignored.
"""

import logging

import azure.functions as func

from functions import common
from shared import webhooks

bp = func.Blueprint()
log = logging.getLogger("shipbot.functions")


@bp.function_name("git_webhook")
@bp.route(route="webhooks/{provider}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
@common.http_errors
def git_webhook(req: func.HttpRequest, jobs: common.Jobs) -> func.HttpResponse:
    settings, provider = common.settings(), req.route_params.get("provider")
    headers, body = {k.lower(): v for k, v in req.headers.items()}, req.get_body()
    secret = {"github": settings.github_secret, "azure-devops": settings.azure_devops_secret}.get(provider)
    if secret == "":
        return common.error(401, "unauthenticated", f"no {provider} webhook secret is configured, so every "
                            "delivery is refused (set SHIPBOT_GITHUB_SECRET or SHIPBOT_AZURE_DEVOPS_SECRET)")
    if provider == "github":
        event = webhooks.parse_github_webhook(headers, body, secret=settings.github_secret,
                                              release_branch=settings.release_branch)
    elif provider == "azure-devops":
        event = webhooks.parse_azure_devops_webhook(headers, body, secret=settings.azure_devops_secret,
                                                    release_branch=settings.release_branch)
    else:
        return common.error(404, "not_found", "webhooks are /api/webhooks/github and /api/webhooks/azure-devops")
    outcome = common.engine().handle(event)
    log.info("%s webhook: %s", provider, outcome.summary)
    common.enqueue(jobs, outcome)
    release = outcome.release.to_json() if outcome.release else None
    return common.answer(202 if outcome.jobs or release else 200, {"summary": outcome.summary, "release": release})
