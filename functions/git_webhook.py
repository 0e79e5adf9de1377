"""Git push webhooks -> build that commit with the current model.

`POST /api/webhooks/github` is authenticated by its X-Hub-Signature-256 HMAC (required) and
`POST /api/webhooks/azure-devops` by the service hook's Basic-auth secret; both are anonymous at the host
level because the signature is the credential. The secret is that of the application whose source the
delivery names (the fleet's `source.webhook_secret`, an app setting); a repository no application names is
checked with SHIPBOT_GITHUB_SECRET / SHIPBOT_AZURE_DEVOPS_SECRET and changes nothing. A push to another branch,
or a ping, is answered and ignored.
"""

import azure.functions as func

from functions import common
from shared import webhooks

bp = func.Blueprint()


@bp.function_name("git_webhook")
@bp.route(route="webhooks/{provider}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
@common.http_errors
def git_webhook(req: func.HttpRequest, jobs: common.Jobs) -> func.HttpResponse:
    provider = req.route_params.get("provider")
    parse = {"github": webhooks.parse_github_webhook, "azure-devops": webhooks.parse_azure_devops_webhook}.get(provider)
    if parse is None:
        return common.error(404, "not_found", "webhooks are /api/webhooks/github and /api/webhooks/azure-devops")
    headers, body = {k.lower(): v for k, v in req.headers.items()}, req.get_body()
    secret, branch = _credential(provider, body)
    if not secret:
        return common.error(401, "unauthenticated", f"no {provider} webhook secret is configured for this "
                            "repository, so every delivery is refused (the fleet's source.webhook_secret, or "
                            "SHIPBOT_GITHUB_SECRET / SHIPBOT_AZURE_DEVOPS_SECRET)")
    event = parse(headers, body, secret=secret, release_branch=branch)
    outcome = common.bot().handle(event)
    common.routed(f"{provider} webhook", outcome)
    common.enqueue(jobs, outcome)
    release = outcome.release.to_json() if outcome.release else None
    return common.answer(202 if outcome.jobs or release else 200, {"summary": outcome.summary, "release": release})


def _credential(provider: str, body: bytes) -> tuple[str, str]:
    """(secret, release branch) of the application the delivery claims to be for: its source's webhook secret.
    A repository no application names is checked with the provider's app setting, and changes nothing."""
    settings = common.settings()
    default = {"github": settings.github_secret, "azure-devops": settings.azure_devops_secret}[provider]
    repository, branches = webhooks.claimed_source(provider, body)
    named = common.bot().fleet().naming(repository) if repository else []
    app = next((a for a in named if a.source.branch in branches), named[0] if named else None)
    if app is None:
        return default, settings.release_branch
    reference = app.source.webhook_secret
    return (settings.secret(reference) if reference else default), app.source.branch
