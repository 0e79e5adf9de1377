"""Registry ImagePushed -> smoke-test that exact digest, then roll it out to staging if green.

Only repositories in the allow-list are acted on. The smoke test and the rollout run as a job on the work
queue (Event Grid wants an answer within seconds); raising makes Event Grid redeliver.
"""

import azure.functions as func

from functions import common
from shared import events

bp = func.Blueprint()


@bp.function_name("image_pushed")
@bp.event_grid_trigger(arg_name="event")
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
def image_pushed(event: func.EventGridEvent, jobs: common.Jobs) -> None:
    common.handle_event(events.parse_image_pushed, event, jobs)
