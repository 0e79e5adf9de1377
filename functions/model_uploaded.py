"""Storage BlobCreated (Event Grid or CloudEvents schema) -> build the head commit with the newest model.

Blobs outside `models/<name>/<version>/<file>`, other event types, and empty or partial blobs are acknowledged
and logged. Raising (a transient failure) makes Event Grid redeliver.
"""

import functools

import azure.functions as func

from functions import common
from shared import events

bp = func.Blueprint()


@bp.function_name("model_uploaded")
@bp.event_grid_trigger(arg_name="event")
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
def model_uploaded(event: func.EventGridEvent, jobs: common.Jobs) -> None:
    parse = functools.partial(events.parse_blob_created, models_container=common.settings().models_container)
    common.handle_event(parse, event, jobs)
