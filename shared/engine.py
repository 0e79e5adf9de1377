"""The engine: applies the decisions of shared.planning through the ports and writes the ledger.

Events are hints and state is truth. `handle(event)` turns any trigger into a reconcile of what it concerns
and returns the jobs (smoke test, rollout) that the trigger enqueues; `run(job)` does one such job and returns
the jobs that follow it (a green smoke test's staging rollout is a job of its own, so that each job fits one
invocation's time limit however long a remote smoke run and a rollout take). Both are safe to repeat: a
redelivered event is recognised by its marker, and every step re-reads the ledger before it acts. Rollouts
hold the environment's lease, so one environment sees one rollout at a time.

Raises shared.errors; functions/ decides what each means for its trigger.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass, field

from shared import errors, evaluation, events, fleet, gate, jobs, ncrontab, planning, ports
from shared.jobs import Job
from shared.releases import Deployment, Entry, Environment, Evaluation, Release, Status
from shared.releases import release_id_for, release_id_for_digest

log = logging.getLogger("shipbot.engine")
MAX_LOST_BUILDS = 3  # restarts of a build the builder lost, before the release is marked failed

REVISION_LABEL = "org.opencontainers.image.revision"
RELEASE_LABEL = "dev.shipbot.release.id"
MODEL_SHA_LABEL = "dev.shipbot.model.sha256"
CANDIDATE_WINDOW = 500  # releases an environment's next one is chosen among, newest first
DEFAULT_CHAIN = tuple(fleet.Environment.model_validate(doc) for doc in (
    {"name": "staging", "target": {"kind": "local", "port": 8081}, "rule": "on_green"},
    {"name": "production", "target": {"kind": "local", "port": 8080}, "rule": "schedule", "schedule": "0 0 2 * * *"}))


@dataclass(frozen=True, slots=True)
class Config:
    repository: str                        # full image name our builds push to: "<registry>/<path>"
    release_branch: str = "main"
    models: tuple[str, ...] = ()           # the model names it follows; (): the most recently uploaded name
    allowed_repositories: frozenset[str] = frozenset()  # full names; ImagePushed elsewhere is ignored
    source_repository: str = ""            # the app's git repository; a push to another one changes nothing
    max_build_attempts: int = 3
    chain: tuple[fleet.Environment, ...] = DEFAULT_CHAIN  # its environments, in order, with their rules
    app: str = ""                          # the application's name, stamped on the jobs it hands out
    evaluate: evaluation.Spec | None = None  # the fleet's quality gate, for images that declare none


@dataclass(slots=True)
class Outcome:
    """What a trigger did: a one-line summary for its log, and the jobs to enqueue."""

    summary: str
    jobs: list[Job] = field(default_factory=list)
    release: Release | None = None


class Engine:
    def __init__(self, ports_: ports.Ports, config: Config) -> None:
        self.ports, self.config = ports_, config
        self.ledger = ports_.ledger
        self.environments = tuple(spec.name for spec in config.chain)

    # -- the chain --------------------------------------------------------------------------------------------
    def spec(self, environment: str) -> fleet.Environment:
        """An environment of the chain (NotFound names the ones there are)."""
        planning.check_environment(environment, self.environments)
        return self.config.chain[self.environments.index(environment)]

    def previous(self, environment: str) -> str | None:
        """The environment a release comes from on its way into `environment`; None for the first."""
        index = self.environments.index(self.spec(environment).name)
        return self.environments[index - 1] if index else None

    def following(self, environment: str) -> fleet.Environment | None:
        index = self.environments.index(self.spec(environment).name)
        return self.config.chain[index + 1] if index + 1 < len(self.config.chain) else None

    # -- events -----------------------------------------------------------------------------------------------
    def handle(self, event: object) -> Outcome:
        """Any domain event -> Outcome. A redelivered event (same id) is acknowledged and does nothing."""
        event_id = getattr(event, "event_id", None)
        if event_id:
            try:
                self.ledger.create_event_marker(event_id)
            except errors.Exists:
                return Outcome(f"event {event_id} was handled before; nothing to do")
        try:
            return self._stamped(self._dispatch(event))
        except Exception:
            if event_id:  # let the redelivery try again; the ledger holds whatever was done
                self.ledger.delete_event_marker(event_id)
            raise

    def _stamped(self, outcome: Outcome) -> Outcome:
        """Jobs carry the application they are for, so that the work queue hands each to its engine."""
        if self.config.app:
            outcome.jobs = [dataclasses.replace(job, app=self.config.app) for job in outcome.jobs]
        return outcome

    def _dispatch(self, event: object) -> Outcome:
        match event:
            case events.Ignored(reason=reason):
                return Outcome(f"ignored: {reason}")
            case events.ModelUploaded():
                return self.reconcile(trigger=f"model {event.model_name}/{event.model_version} uploaded")
            case events.ModelRegistered():
                return self.reconcile(trigger=f"model {event.model_name}/{event.model_version} registered")
            case events.CommitPushed():
                if self.config.source_repository and not fleet.same_repository(event.clone_url,
                                                                               self.config.source_repository):
                    return Outcome(f"ignored: a push to {event.clone_url} ({event.repository}), a repository no "
                                   "application names")
                return self.reconcile(trigger=f"{event.source} push of {event.commit[:12]} to {event.branch}")
            case events.Pinged():
                return Outcome("webhook ping")
            case events.ImagePushed():
                return self.image_pushed(event)
            case events.PromotionDue():
                return self.schedules_due()
            case events.ReconcileDue():
                return self.reconcile(trigger="reconcile timer")
        raise errors.InvalidEvent(f"no handler for {type(event).__name__}")

    def reconcile(self, *, trigger: str) -> Outcome:
        """Converge: the wanted release exists and builds; lost steps of releases in flight are redone; each
        `on_green` environment runs the newest release its rules admit; a `schedule` slot that passed fires."""
        found: list[Job] = []
        for release in self.ledger.list_in_flight():  # first, so that a build found failed is retried below
            found += self._repair(release)
        found += self._orphaned_rollouts()
        wanted, summary = self._ensure_wanted_release(trigger)
        now = self.ports.clock()
        for spec in self.config.chain:
            job = (self.advance(spec, by="reconcile") if spec.rule == "on_green"
                   else self._slot(spec, now) if spec.rule == "schedule" else None)
            if job:
                found.append(job)
        return Outcome(summary, found, wanted)

    def _ensure_wanted_release(self, trigger: str) -> tuple[Release | None, str]:
        if self.ports.source is None:
            return None, "no source: this application's releases come from image pushes"
        model = planning.current_model(self.ports.models.list_models(self.config.models), self.config.models)
        if model is None:
            return None, "no complete model in the models container yet"
        head = self.ports.source.get_head(self.config.release_branch)
        release, created = self.create_release(head.sha, model, trigger=trigger, by="shipbot")
        if created:
            return release, f"release {release.id} planned: {head.sha[:12]} + {model.name}/{model.version}"
        if planning.should_retry_build(release, max_attempts=self.config.max_build_attempts) and \
                trigger == "reconcile timer":
            return self.start_build(release, by="reconcile", retry=True), f"release {release.id}: build retried"
        return release, f"release {release.id} already {release.status.value}; nothing to do"

    def create_release(self, commit: str, model, *, trigger: str, by: str) -> tuple[Release, bool]:
        """The release of (commit, model, recipe), created and its build started unless it exists."""
        recipe = self.ports.builder.recipe
        release_id = release_id_for(commit, model.sha256, recipe)
        now = self.ports.clock()
        release = Release(id=release_id, created=now, trigger=trigger, repository=self.config.repository,
                          tag=release_id, status=Status.BUILDING, commit=commit, model=model, recipe=recipe,
                          history=(Entry(now, "planned", by, trigger),))
        try:
            self.ledger.create_release(release)
        except errors.Exists:
            return self.ledger.get_release(release_id), False
        self._supersede_older(release)
        return self.start_build(release, by=by), True

    def start_build(self, release: Release, *, by: str, retry: bool = False) -> Release:
        request = ports.BuildRequest(release_id=release.id, commit=release.commit or "", model=release.model,
                                     repository=release.repository, tag=release.tag)
        build_id = self.ports.builder.begin_build(request, self.ports.source, self.ports.models)
        now = self.ports.clock()
        return self.ledger.update_release(release.id, lambda r: r.with_(
            status=Status.BUILDING, build_id=build_id, build_attempts=r.build_attempts + 1, reason="",
            entry=Entry(now, "build retried" if retry else "build started", by, f"build {build_id}")))

    def _supersede_older(self, new: Release) -> None:
        for old in planning.superseded_by(new, self.ledger.list_in_flight()):
            now = self.ports.clock()
            self.ledger.update_release(old.id, lambda r: r.with_(
                status=Status.SUPERSEDED, entry=Entry(now, "superseded", "shipbot", f"by {new.id}"))
                if r.status.in_flight else r)

    def image_pushed(self, event: events.ImagePushed) -> Outcome:
        repository = f"{event.registry}/{event.repository}"
        if repository not in self.config.allowed_repositories:
            return Outcome(f"ignored: repository {repository} is not in the allow-list")
        release = self._release_for_image(repository, event)
        if release.status is Status.SUPERSEDED:
            return Outcome(f"release {release.id} was superseded; its image is not tested", release=release)
        if release.digest != event.digest:
            return Outcome(f"release {release.id} is {release.digest}; a push of {event.digest} to its tag "
                           "is ignored (tags of releases are immutable)", release=release)
        if release.status is not Status.BUILT:
            return Outcome(f"release {release.id} is {release.status.value}; nothing to do", release=release)
        return Outcome(f"release {release.id} built; smoke test queued", [jobs.test(release.id)], release)

    def _release_for_image(self, repository: str, event: events.ImagePushed) -> Release:
        now = self.ports.clock()
        if repository == self.config.repository and event.tag:
            try:
                release = self.ledger.get_release(event.tag)
                detail = event.digest
                if release.build_id and release.digest is None:
                    steps = self.ports.builder.get_build(release.build_id).steps
                    detail += "; " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in steps) if steps else ""
                return self.ledger.update_release(event.tag, lambda r: _image_arrived(r, event.digest, now, detail))
            except errors.NotFound:
                pass  # a tag we did not build: another pipeline's image
        release_id = release_id_for_digest(event.digest)
        image = self.ports.registry.get_image(event.repository, event.digest)
        labels = image.labels
        release = Release(id=release_id, created=now, trigger="image pushed", repository=repository,
                          tag=event.tag or "", status=Status.BUILT, digest=event.digest,
                          commit=labels.get(REVISION_LABEL) or None,
                          history=(Entry(now, "image pushed", "registry", f"{repository}:{event.tag or '-'}"),))
        try:
            self.ledger.create_release(release)
        except errors.Exists:
            return self.ledger.get_release(release_id)
        self._supersede_older(release)
        return release

    def schedules_due(self) -> Outcome:
        """The `schedule` environments whose slot passed since the last look: each fires once."""
        now = self.ports.clock()
        found = [job for spec in self.config.chain if spec.rule == "schedule" for job in [self._slot(spec, now)] if job]
        return Outcome(f"{len(found)} scheduled rollout{'s' * (len(found) != 1)}", found)

    def _slot(self, spec: fleet.Environment, now) -> Job | None:
        """A `schedule` rule: the latest slot in (the last one handled, now] fires once, however many were missed
        while the bot was down. The first look only starts the count, so applying a chain deploys nothing."""
        schedule, fired = ncrontab.parse(spec.schedule or ""), [None]

        def mark(env: Environment) -> Environment:  # again after a 412: one reconcile of many fires the slot
            if env.scheduled is None:
                fired[0] = None
                return env.with_(scheduled=now)
            fired[0] = schedule.last_due(env.scheduled, now, spec.zone)
            return env.with_(scheduled=fired[0]) if fired[0] else env

        self.ledger.update_environment(spec.name, mark)
        if fired[0] is None:
            return None
        slot = fired[0].astimezone(spec.zone).isoformat(timespec="minutes")
        job = self.advance(spec, by="schedule", reason=f"the {slot} slot of {spec.schedule} ({spec.time_zone})")
        log.info("%s: schedule slot %s: %s", spec.name, slot, f"rolling out {job.release_id}" if job else
                 "nothing to roll out")
        if job is not None:  # the slot is spent: its rollout is pending from now, so a lost job is redone
            self.ledger.update_environment(spec.name, lambda e: e if e.pending else e.with_(pending=job.to_message()))
        return job

    def waiting(self, environment: str) -> str:
        """Why an automatic environment with gates does not take the release that could go there now (e.g. it
        lacks an approval), or "". Reads only; what `shipbot status` shows."""
        spec = self.spec(environment)
        if spec.rule == "manual" or not (spec.approval or spec.soak or spec.freeze):
            return ""
        job, held = self._advance(spec, by="status")
        return "" if job is not None else held

    def advance(self, spec: fleet.Environment, *, by: str, reason: str = "") -> Job | None:
        """The rollout that moves `spec`'s environment to the newest release its rules and gates admit, if any."""
        return self._advance(spec, by=by, reason=reason)[0]

    def _advance(self, spec: fleet.Environment, *, by: str, reason: str = "") -> tuple[Job | None, str]:
        """`advance`, and why nothing moves when a gate holds back a release that could (e.g. no approval)."""
        env = self.ledger.get_environment(spec.name)
        if env.blocked:  # an automatic rollout failed for good (a refused credential): the operator's turn
            return None, f"{spec.name} is blocked: {env.blocked}"
        previous, now = self.previous(spec.name), self.ports.clock()
        current = self.current_release(env)
        held: list[str] = []

        def gate(release: Release) -> str:
            why = planning.gate(release, spec, previous, now)
            if why and not held:
                held.append(why)
            return why

        chosen = planning.candidate(self.releases_since(current), env, current, previous=previous, gate=gate)
        if chosen is not None:
            return jobs.rollout(spec.name, chosen.id, by=by, reason=reason), ""
        return None, held[0] if held else ""

    # -- repairs (reconcile) ----------------------------------------------------------------------------------
    def _repair(self, release: Release) -> list[Job]:
        if release.status is Status.BUILDING and release.build_id:
            return self._check_build(release)
        if release.status is Status.BUILT:
            return [jobs.test(release.id)]  # its test job was lost, or is queued (running it twice is safe)
        if release.status is Status.TESTING and self._lease_free(self.ledger.lease_release(release.id,
                                                                                          wait=False)):
            return [jobs.test(release.id)]  # its tester died (its lease lapsed): the test job takes it over
        return []

    def _orphaned_rollouts(self) -> list[Job]:
        """Rollouts whose worker died under way: the environment says one is pending and nobody holds its lease."""
        found = []
        for name in self.environments:
            env = self.ledger.get_environment(name)
            if env.pending and self._lease_free(self.ledger.lease_environment(name, wait=False)):
                try:
                    found.append(Job.from_message(env.pending))
                except errors.InvalidEvent:
                    log.error("environment %s: its pending rollout is not a job; cleared", name)
                    self.ledger.update_environment(name, lambda e: e.with_(pending=None))
        return found

    @staticmethod
    def _lease_free(lease) -> bool:
        try:
            with lease:
                return True
        except errors.LeaseBusy:
            return False

    def _check_build(self, release: Release) -> list[Job]:
        build = self.ports.builder.get_build(release.build_id)
        now = self.ports.clock()
        if build.state is ports.BuildState.SUCCEEDED and build.digest:
            self.ledger.update_release(release.id, lambda r: r.with_(
                status=Status.BUILT, digest=build.digest, entry=Entry(now, "image found", "reconcile",
                                                                      build.digest))
                if r.status is Status.BUILDING else r)
            return [jobs.test(release.id)]
        if build.state is ports.BuildState.UNKNOWN:
            return self._lost_build(release, build.build_id)
        if build.state is ports.BuildState.FAILED:
            reason = f"build {build.build_id} failed: {build.error}"
            if build.log_url:
                reason += f" (log: {build.log_url})"
            self.ledger.update_release(release.id, lambda r: r.with_(
                status=Status.FAILED, reason=reason, entry=Entry(now, "build failed", "reconcile", reason))
                if r.status is Status.BUILDING else r)
            self.ports.notifier.notify(f"build of {release.id} failed", reason, failed=True)
        return []

    def _lost_build(self, release: Release, build_id: str) -> list[Job]:
        """A build the builder has no record of (lost with a restarted host): an infrastructure fault, not the
        app's. If its image made it to the registry, take it; else build again at once, not as an attempt."""
        now = self.ports.clock()
        image = self._image_of(release)
        if image is not None:
            self.ledger.update_release(release.id, lambda r: _image_arrived(
                r, image.digest, now, f"found by its tag after build {build_id} was lost")
                if r.status is Status.BUILDING and r.build_id == build_id else r)
            return [jobs.test(release.id)]
        lost = sum(entry.what == "build restarted" for entry in release.history)
        if lost >= MAX_LOST_BUILDS:  # e.g. a build the builder refused in another process: it will not build
            reason = f"build {build_id} was lost (the builder has no record of it), {lost + 1} times"
            self.ledger.update_release(release.id, lambda r: r.with_(
                status=Status.FAILED, reason=reason, entry=Entry(now, "build failed", "reconcile", reason))
                if r.status is Status.BUILDING and r.build_id == build_id else r)
            self.ports.notifier.notify(f"build of {release.id} failed", reason, failed=True)
            return []
        claim = f"restarting-{uuid.uuid4().hex[:12]}"  # one reconcile restarts it, however many run at once
        claimed = self.ledger.update_release(release.id, lambda r: r.with_(
            build_id=claim, entry=Entry(now, "build restarted", "reconcile",
                                        f"build {build_id} was lost (the builder has no record of it)"))
            if r.status is Status.BUILDING and r.build_id == build_id else r)
        if claimed.build_id != claim:
            return []
        request = ports.BuildRequest(release_id=release.id, commit=release.commit or "", model=release.model,
                                     repository=release.repository, tag=release.tag)
        new_id = self.ports.builder.begin_build(request, self.ports.source, self.ports.models)
        self.ledger.update_release(release.id, lambda r: r.with_(build_id=new_id) if r.build_id == claim else r)
        return []

    def _image_of(self, release: Release) -> ports.Image | None:
        """The release's image in the registry, by its tag, if it is the one built for this release."""
        repository = release.repository.removeprefix(f"{self.ports.registry.host}/")
        try:
            image = self.ports.registry.get_image(repository, release.tag)
        except errors.NotFound:
            return None
        return image if image.labels.get(RELEASE_LABEL) == release.id else None

    # -- jobs -------------------------------------------------------------------------------------------------
    def run(self, job: Job) -> Outcome:
        """Runs one job; returns its summary and the jobs to enqueue next. Repeating a job does no harm."""
        if job.kind == "test":
            return self._stamped(self._test(job.release_id))
        if job.kind == "rollout":
            return self._stamped(self._rollout(job))
        return Outcome(self._rollback(job))

    def _test(self, release_id: str) -> Outcome:
        """The smoke test, under the release's lease: a release `testing` whose lease is free lost its tester,
        and the next test job (from reconcile, or the redelivered one) takes it over."""
        try:
            with self.ledger.lease_release(release_id, wait=False):
                return self._test_leased(release_id)
        except errors.LeaseBusy:
            return Outcome(f"release {release_id} is being tested by another worker; no test")

    def _test_leased(self, release_id: str) -> Outcome:
        now, claimed = self.ports.clock(), [False]

        started: list[Entry] = []

        def claim(r: Release) -> Release:  # called again after a 412: the last call says who won
            claimed[0] = r.status in (Status.BUILT, Status.TESTING)  # TESTING with its lease ours: tester died
            what = "smoke test started" if r.status is Status.BUILT else "smoke test restarted (its tester died)"
            started[:] = [Entry(now, what, "shipbot", f"{r.ref or ''} (test {uuid.uuid4().hex[:8]})")]
            return r.with_(status=Status.TESTING, entry=started[0]) if claimed[0] else r

        def ours(r: Release) -> bool:
            """Still our test: a tester that lost its lease (storage down) must not overwrite its successor's."""
            starts = [e for e in r.history if e.what.startswith(("smoke test started", "smoke test restarted"))]
            return r.status is Status.TESTING and bool(starts) and starts[-1] == started[0]

        release = self.ledger.update_release(release_id, claim)
        if not claimed[0]:  # a duplicate job, or the release moved on (superseded, already tested)
            return Outcome(f"release {release_id} is {release.status.value}; no test")
        stopped = False  # by the quality gate (not by the smoke test)
        try:
            spec, data = self._gate_inputs(release)
            scoring = {"evaluation": ports.Evaluation(data.rows, batch=spec.batch, seconds=spec.seconds)} \
                if spec and data else {}
            verdict = self.ports.smoke.run(release.ref, self._expectation(release), **scoring)
        except errors.NotFound as e:  # the image is gone from the registry: nothing left to test
            spec, data, verdict = None, None, ports.Verdict(passed=False, reason=str(e))
        except gate.Unusable as e:  # the gate cannot run: the release goes nowhere, says why, may be overridden
            spec, data, stopped, figures = None, None, True, gate.not_run(e.spec, str(e))
            verdict = ports.Verdict(passed=False, reason=f"quality gate: {e}")
        else:
            figures = self._judge(spec, data, verdict) if spec and verdict.passed else None
        if figures is not None and not figures.passed:
            stopped, verdict = True, dataclasses.replace(verdict, passed=False, reason=f"quality gate: {figures.reason}")
        now = self.ports.clock()
        detail = _steps(verdict)
        if not verdict.passed:
            what = "quality gate failed" if stopped else "smoke test failed"
            release = self.ledger.update_release(release_id, lambda r: r.with_(
                status=Status.FAILED, reason=verdict.reason if stopped else f"smoke test failed: {verdict.reason}",
                evaluation=figures, entry=Entry(now, what, "shipbot", f"{verdict.reason} {detail}".strip()))
                if ours(r) else r)
            if release.status is not Status.FAILED:
                return Outcome(f"release {release_id}: another tester took over; this result is dropped")
            self.ports.notifier.notify(f"{release_id} {what}", verdict.reason, failed=True)
            return Outcome(f"release {release_id} {what}: {verdict.reason}", release=release)
        passed = f"{detail}; quality gate: {figures.reason}" if figures else detail
        release = self.ledger.update_release(release_id, lambda r: r.with_(
            status=Status.GREEN, evaluation=figures, entry=Entry(now, "smoke test passed", "shipbot", passed))
            if ours(r) else r)
        if release.status is not Status.GREEN:
            return Outcome(f"release {release_id}: another tester took over; this result is dropped")
        first = self.config.chain[0]
        job = self.advance(first, by="shipbot", reason="smoke test passed") if first.rule == "on_green" else None
        return Outcome(f"release {release_id} passed its smoke test" +
                       (f"; {first.name} rollout of {job.release_id} queued" if job else ""), [job] if job else [],
                       release)

    def _rollout(self, job: Job) -> Outcome:
        spec = self.spec(job.environment)
        environment, previous = spec.name, self.previous(spec.name)
        with self.ledger.lease_environment(environment):
            release = self.ledger.get_release(job.release_id)
            env = self.ledger.get_environment(environment)
            why = "" if job.force else planning.refusal(
                release, env, self.current_release(env), automatic=job.automatic, tested_on=previous)
            if not why and job.automatic and not job.force:
                why = planning.gate(release, spec, previous, self.ports.clock())
            if job.force and release.digest is None:
                why = f"release {release.id} has no image"
            if why:
                self._pending(environment, None, of=job.release_id)  # e.g. a dead worker's, done since
                if not job.force:
                    self._record_refusal(release, environment, job, why)
                return Outcome(f"not deployed to {environment}: {why}")
            env = self._pending(environment, job.to_message())  # a worker that dies leaves it for reconcile
            try:
                verdict = self.ports.deployer.deploy(environment, release.ref, self._expectation(release))
            except errors.TransientError:
                raise  # still pending: the job is retried, and reconcile redoes it if the worker died
            except errors.ReleaseError as failure:  # retrying will not help: not pending any more, and say so
                self._rollout_failed(environment, release, job, failure)
                raise
            if verdict.passed:
                self._record_deployed(release, env, job, verdict)
            else:
                self._record_failed_rollout(release, env, job, verdict)
                return Outcome(f"rollout of {release.id} to {environment} failed and was rolled back: "
                               f"{verdict.reason}")
        after = self.following(environment)  # outside the lease: the next environment's rollout is its own job
        job_next, held = (self._advance(after, by="shipbot", reason=f"verified on {environment}")
                          if after is not None and after.rule == "on_green" else (None, ""))
        return Outcome(f"{release.id} runs on {environment}" +
                       (f"; {after.name} rollout of {job_next.release_id} queued" if job_next else "") +
                       (f"; {after.name} waits: {held}" if held else ""),
                       [job_next] if job_next else [], release)

    def _rollout_failed(self, environment: str, release: Release, job: Job, failure: errors.ReleaseError) -> None:
        """A rollout that failed for a reason retrying will not fix, and that is not the release's (a refused
        credential, a Deployment that is gone). An automatic one blocks automatic rollouts to the environment
        until one succeeds (a manual deploy, once the cause is fixed): reconcile would repeat it forever."""
        now, why = self.ports.clock(), f"{release.id}: {failure}"
        blocked = why if job.automatic and isinstance(failure, errors.PermanentError) else None
        self.ledger.update_environment(environment, lambda e: e.with_(
            pending=None, blocked=blocked or e.blocked, entry=Entry(now, "rollout failed", job.by, why)))
        self.ports.notifier.notify(f"rollout of {release.id} to {environment} failed", why, failed=True)

    def _pending(self, environment: str, message: str | None, *, of: str | None = None) -> Environment:
        """Records the rollout under way on `environment` (the caller holds its lease); None clears it, only
        when it is a rollout of release `of` if that is given."""
        def change(e: Environment) -> Environment:
            if e.pending == message or (of is not None and e.pending and _job_release(e.pending) != of):
                return e
            return e.with_(pending=message)

        return self.ledger.update_environment(environment, change)

    def _rollback(self, job: Job) -> str:
        environment = self.spec(job.environment).name
        with self.ledger.lease_environment(environment):
            env = self.ledger.get_environment(environment)
            if env.previous is None or (job.release_id and env.previous.release_id != job.release_id):
                raise errors.Refused(f"{environment} has no previous release to roll back to, or it changed "
                                     "since the rollback was asked for")
            back = self.ledger.get_release(env.previous.release_id)
            self._pending(environment, None)  # the operator's rollback wins over a rollout a dead worker left
            verdict = self.ports.deployer.deploy(environment, env.previous.ref, self._expectation(back))
            now = self.ports.clock()
            if not verdict.passed:
                self.ledger.update_environment(environment, lambda e: e.with_(entry=Entry(
                    now, "rollback failed", job.by, f"to {back.id}: {verdict.reason}; {job.reason}")))
                self.ports.notifier.notify(f"rollback of {environment} failed", verdict.reason, failed=True)
                return f"rollback of {environment} to {back.id} failed: {verdict.reason}"
            rolled = env.current
            if rolled is not None:
                self.ledger.update_release(rolled.release_id, lambda r: r.with_(
                    rolled_back=True, entry=Entry(now, f"rolled back from {environment}", job.by, job.reason)))
            self.ledger.update_environment(environment, lambda e: e.with_(
                current=Deployment(back.id, env.previous.ref, now, job.by), previous=None,
                entry=Entry(now, "rolled back", job.by,
                            f"{rolled.release_id if rolled else '-'} -> {back.id}: {job.reason}")))
            self.ports.notifier.notify(f"{environment} rolled back to {back.id}", f"by {job.by}: {job.reason}")
            return f"{environment} rolled back to {back.id}"

    def _record_deployed(self, release: Release, env: Environment, job: Job, verdict: ports.Verdict) -> None:
        now = self.ports.clock()
        how = "forced by " + job.by if job.force else f"by {job.by}"
        detail = f"{how}; {job.reason}; {_steps(verdict)}".strip("; ")
        self.ledger.update_environment(env.name, lambda e: e.with_(
            current=Deployment(release.id, release.ref, now, job.by), pending=None, blocked=None,
            previous=e.previous if e.current is not None and e.current.release_id == release.id else e.current,
            entry=Entry(now, "deployed", job.by, f"{release.id}: {detail}")))
        self.ledger.update_release(release.id, lambda r: r.with_(
            deployed=r.deployed + ((env.name,) if env.name not in r.deployed else ()),
            entry=Entry(now, f"deployed to {env.name}", job.by, detail)))
        self.ports.notifier.notify(f"{release.id} is live on {env.name}", f"{release.ref} ({how})")

    def _record_failed_rollout(self, release: Release, env: Environment, job: Job, verdict: ports.Verdict) -> None:
        now = self.ports.clock()
        restored = "nothing ran before"
        if env.current is not None:  # the deployer restores what it can; make sure, and say so
            if self.ports.deployer.get_running(env.name) != env.current.ref:
                back = self.ledger.get_release(env.current.release_id)
                self.ports.deployer.deploy(env.name, env.current.ref, self._expectation(back))
            restored = f"{env.name} runs {env.current.release_id} again"
        reason = f"rollout to {env.name} failed verification: {verdict.reason}"
        self.ledger.update_release(release.id, lambda r: r.with_(
            status=Status.FAILED if job.automatic else r.status, reason=reason, rolled_back=True,
            entry=Entry(now, f"rollout to {env.name} failed", job.by, f"{verdict.reason}; {restored}")))
        self.ledger.update_environment(env.name, lambda e: e.with_(pending=None, entry=Entry(
            now, "rolled back automatically", "shipbot", f"{release.id} failed verification; {restored}")))
        self.ports.notifier.notify(f"rollout of {release.id} to {env.name} failed", f"{reason}; {restored}",
                                   failed=True)

    def _record_refusal(self, release: Release, environment: str, job: Job, why: str) -> None:
        if job.automatic:
            log.info("not deploying %s to %s: %s", release.id, environment, why)
            return
        now = self.ports.clock()
        self.ledger.update_release(release.id, lambda r: r.with_(
            entry=Entry(now, f"deploy to {environment} refused", job.by, why)))

    # -- the quality gate -------------------------------------------------------------------------------------
    def _gate_inputs(self, release: Release) -> tuple[evaluation.Spec | None, evaluation.DataSet | None]:
        """The evaluation the image declares (else the fleet's for the application) and its data set, read from
        the repository at the release's commit (checked against the sha256 the builder read) or from the model
        version; (None, None) when there is none. gate.Unusable says why the gate cannot run."""
        repository = release.repository.removeprefix(f"{self.ports.registry.host}/")
        try:
            spec = evaluation.Spec.of_labels(self.ports.registry.get_image(repository, release.digest).labels)
        except ValueError as e:
            raise gate.Unusable(str(e)) from None
        spec = spec or self.config.evaluate  # the commit's shipbot.toml first, else the fleet's
        if spec is None:
            return None, None
        if spec.with_model is not None and release.model is None:
            raise gate.Unusable("the evaluation set travels with the model, and the release names no model", spec)
        if spec.with_model is None and (not release.commit or self.ports.source is None):
            raise gate.Unusable("the release names no commit of this application's repository to read the "
                                "evaluation set from", spec)
        try:
            data = (self.ports.models.read_file(release.model, spec.with_model, max_bytes=evaluation.MAX_BYTES)
                    if spec.with_model is not None else
                    self.ports.source.read_file(release.commit, spec.data, max_bytes=evaluation.MAX_BYTES))
        except (errors.NotFound, errors.PermanentError) as e:
            raise gate.Unusable(f"the evaluation set: {e}", spec) from None
        return spec, gate.data_set(spec, data)

    def _judge(self, spec: evaluation.Spec, data: evaluation.DataSet | None,
               verdict: ports.Verdict) -> Evaluation:
        """The gate's figures: against production's recorded figure on the same rows, else against its image
        scored now on the candidate's set (one more smoke run, of production's exact digest)."""
        production, rescored = self._production(), None
        if production is not None and production.ref and data is not None and verdict.predictions is not None \
                and not gate.comparable(production, spec, data):
            try:
                ran = self.ports.smoke.run(production.ref, self._expectation(production),
                                           evaluation=ports.Evaluation(data.rows, batch=spec.batch,
                                                                       seconds=spec.seconds))
            except (errors.NotFound, errors.PermanentError) as e:  # its image is gone, say
                ran = ports.Verdict(passed=False, reason=str(e))
            rescored = gate.rescore(spec, data, ran)
        return gate.judge(spec, data, verdict, production, rescored)

    def _production(self) -> Release | None:
        """The release the chain's last environment runs: the gate's baseline when scored on the same rows."""
        return self.current_release(self.ledger.get_environment(self.environments[-1]))

    # -- helpers ----------------------------------------------------------------------------------------------
    def releases_since(self, current: Release | None) -> list[Release]:
        """What a candidate can be among: the releases no older than what the environment runs (the ledger's
        time index; every release only while it runs nothing ShipBot knows)."""
        return self.ledger.releases_since(current.created if current is not None else None, limit=CANDIDATE_WINDOW)

    def current_release(self, env: Environment) -> Release | None:
        if env.current is None:
            return None
        try:
            return self.ledger.get_release(env.current.release_id)
        except errors.NotFound:
            return None

    def _expectation(self, release: Release) -> ports.Expectation:
        if release.id.startswith("i-"):  # a foreign image reports its own release id, if any
            image = self.ports.registry.get_image(release.repository.split("/", 1)[1], release.digest)
            return ports.Expectation(image.labels.get(RELEASE_LABEL) or None,
                                     model_sha256=image.labels.get(MODEL_SHA_LABEL) or None, commit=release.commit)
        return ports.Expectation(release.id, model_sha256=release.model.sha256 if release.model else None,
                                 commit=release.commit)


def _job_release(message: str) -> str | None:
    try:
        return Job.from_message(message).release_id
    except errors.InvalidEvent:
        return None


def _image_arrived(release: Release, digest: str, now, detail: str) -> Release:
    """Our build's image is in the registry: record its digest once (tags of releases are immutable). A build
    that reconcile thought failed or lost did push after all, so it goes on to its smoke test."""
    if release.digest is not None:
        return release
    status = Status.BUILT if release.status in (Status.BUILDING, Status.FAILED) else release.status
    return release.with_(digest=digest, status=status, reason="" if status is Status.BUILT else release.reason,
                         entry=Entry(now, "image pushed", "registry", detail))


def _steps(verdict: ports.Verdict) -> str:
    if not verdict.steps:
        return f"{verdict.seconds:.1f} s" if verdict.seconds else ""
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in verdict.steps)

