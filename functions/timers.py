"""Timers, for every application of the fleet: the nightly promotion (SHIPBOT_PROMOTION_SCHEDULE, default 02:00
UTC: the `schedule` environments whose slot passed take their release) and the reconcile that repairs whatever
a lost or failed event left undone and fires any other slot that passed (SHIPBOT_RECONCILE_SCHEDULE, default
every 5 minutes). Both are NCRONTAB expressions: {second} {minute} {hour} {day} {month} {day-of-week}.
"""

from datetime import UTC, datetime

import azure.functions as func

from functions import common
from shared import events

bp = func.Blueprint()


@bp.function_name("nightly_promotion")
@bp.timer_trigger(arg_name="timer", schedule="%SHIPBOT_PROMOTION_SCHEDULE%", use_monitor=True)
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
def nightly_promotion(timer: func.TimerRequest, jobs: common.Jobs) -> None:
    outcome = common.bot().handle(events.PromotionDue(datetime.now(UTC)))
    common.routed("scheduled promotions", outcome)
    common.enqueue(jobs, outcome)


@bp.function_name("reconcile")
# run_on_startup: a host that (re)starts repairs at once what a dead one left (a lost build, a test or a
# rollout under way). Each new instance runs it once more; reconcile is idempotent, so that only costs a read.
@bp.timer_trigger(arg_name="timer", schedule="%SHIPBOT_RECONCILE_SCHEDULE%", run_on_startup=True,
                  use_monitor=False)
@bp.queue_output(arg_name="jobs", queue_name=common.JOBS_QUEUE, connection="SHIPBOT_STORAGE")
def reconcile(timer: func.TimerRequest, jobs: common.Jobs) -> None:
    outcome = common.bot().handle(events.ReconcileDue(datetime.now(UTC)))
    common.routed("reconcile", outcome)
    common.enqueue(jobs, outcome)
