"""Azure ML ModelRegistered (a new model version in the workspace's registry) -> build the head commit with the
version the application's selector picks (that one, or the one its alias or stage names).

Events of another workspace, other event types (ModelDeployed) and payloads that cannot be read are acknowledged
and logged. Raising (a transient failure) makes Event Grid redeliver. Alias and stage moves send no event:
reconcile finds them.
"""

import functools

import azure.functions as func

from functions import common
from shared import events

bp = func.Blueprint()


@bp.function_name("model_registered")
@bp.event_grid_trigger(arg_name="event")
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
def model_registered(event: func.EventGridEvent, jobs: common.Jobs) -> None:
    parse = functools.partial(events.parse_model_registered, workspace=common.settings().workspace)
    common.handle_event(parse, event, jobs)
