"""The work queue: smoke tests, rollouts and rollbacks, one message each.

A job is safe to run twice. A transient failure (an engine that does not answer, a busy lease) raises, so the
queue makes the message visible again; after host.json's maxDequeueCount it lands in `<queue>-poison`,
where reconcile's view of the ledger still finds the release it concerns. A failure that retrying will not
fix (a PermanentError, NotFound) is logged and the message acknowledged: the ledger records why. A message
that is not a job is logged and dropped.
"""

import logging

import azure.functions as func

from functions import common
from shared import errors
from shared import jobs as job_messages

bp = func.Blueprint()
log = logging.getLogger("shipbot.functions")


@bp.function_name("run_job")
@bp.queue_trigger(arg_name="message", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
def run_job(message: func.QueueMessage, jobs: common.Jobs) -> None:
    try:
        job = job_messages.Job.from_message(message.get_body())
    except errors.InvalidEvent as e:
        log.warning("queue message %s dropped: %s", message.id, e)
        return
    try:
        outcome = common.bot().run(job)
        log.info("job %s: %s", job.kind, outcome.summary)
        common.enqueue(jobs, outcome)  # what follows it (a green smoke test's staging rollout)
    except (errors.PermanentError, errors.NotFound) as e:  # retrying will not help; the ledger says why
        log.warning("job %s for %s not done: %s", job.kind, job.release_id or job.environment, e)
