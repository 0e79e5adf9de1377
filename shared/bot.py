"""The bot: many applications, one ShipBot. It reads the fleet in force, keeps an engine per application, and
routes each event to the applications it concerns.

    model uploaded   every application that follows the model from the models container (one with no
                     `models` follows any)
    model registered the same, for applications whose models come from the model registry
    git push         the application whose source names the repository and branch; others: acknowledged
    image pushed     the application whose image repository it is (or, for the settings' application, one
                     of SHIPBOT_ALLOWED_REPOSITORIES)
    timers           every application, in parallel
    a job            the application it names (`Job.app`; empty: the settings' application, a job from before)

Applications are independent: each has its own ledger (shared/adapters/blob_ledger.py's `apps/<name>/`), its
own event markers and leases, and one application's failure (a broken build, a bad manifest, a storage error)
is logged and reported after the others were handled, so it never delays them. With no fleet file applied, the
fleet is the one today's app settings describe (`fleet.single`), and its ledger is the container's root.

Raises shared.errors. No I/O of its own: the fleet comes from the root ledger, engines from `engine_for`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from shared import errors, events, fleet, ports
from shared.engine import Engine, Outcome
from shared.jobs import Job

log = logging.getLogger("shipbot.bot")
PARALLEL = 8  # applications a timer reconciles at once


@dataclass(frozen=True, slots=True)
class Routed:
    """What one trigger did across the fleet: each application's outcome, and the first failure if any."""

    outcomes: dict[str, Outcome]
    failure: BaseException | None = None

    @property
    def summary(self) -> str:
        if not self.outcomes:
            return "no application"
        if len(self.outcomes) == 1:
            return next(iter(self.outcomes.values())).summary
        return "; ".join(f"{app}: {outcome.summary}" for app, outcome in self.outcomes.items())

    @property
    def jobs(self) -> list[Job]:
        return [job for outcome in self.outcomes.values() for job in outcome.jobs]

    @property
    def release(self):
        releases = [o.release for o in self.outcomes.values() if o.release is not None]
        return releases[0] if len(releases) == 1 else None


class Bot:
    def __init__(self, *, ledger: ports.Ledger, default: fleet.Fleet, engine_for: Callable[[fleet.App], Engine],
                 root: str) -> None:
        self.ledger, self.default, self.root = ledger, default, root
        self._engine_for = engine_for
        self._parsed: dict[int, fleet.Fleet] = {}
        self._engines: dict[str, tuple[str, Engine]] = {}
        self._lock = threading.Lock()

    # -- the fleet and its engines ----------------------------------------------------------------------------
    def fleet(self) -> fleet.Fleet:
        """The fleet in force: the newest version applied, else the app settings' single application."""
        try:
            applied = self.ledger.get_fleet()
        except errors.NotFound:
            return self.default
        if applied.version not in self._parsed:
            self._parsed[applied.version] = fleet.parse(applied.text)
        return self._parsed[applied.version]

    def engine(self, app: str | None = None) -> Engine:
        """The engine of the named application (of the only one when `app` is None); NotFound otherwise."""
        return self._engine(self.fleet().app(app or None))

    def engine_of_job(self, job: Job) -> Engine:
        current = self.fleet()
        if not job.app and len(current.apps) > 1:  # a job queued before the fleet: the settings' application
            return self._engine(current.app(self.root))
        return self._engine(current.app(job.app or None))

    def _engine(self, app: fleet.App) -> Engine:
        """Built once per application definition: a fleet change that leaves an application alone keeps it."""
        definition = app.model_dump_json()
        with self._lock:
            known = self._engines.get(app.name)
            if known is None or known[0] != definition:
                known = (definition, self._engine_for(app))
                self._engines[app.name] = known
            return known[1]

    # -- events and jobs --------------------------------------------------------------------------------------
    def handle(self, event: object) -> Routed:
        current = self.fleet()
        match event:
            case events.ModelUploaded() | events.ModelRegistered():
                kind = "blob" if isinstance(event, events.ModelUploaded) else "mlflow"
                apps = current.following(event.model_name, kind)
                if not apps:
                    return _ignored(f"no application follows model {event.model_name} from the "
                                    f"{'models container' if kind == 'blob' else 'model registry'}")
            case events.CommitPushed():
                app = current.of_source(event.clone_url, event.branch)
                if app is None:
                    named = [a.name for a in current.apps
                             if a.source and fleet.same_repository(a.source.repository, event.clone_url)]
                    why = (f"{', '.join(named)} follow{'s' * (len(named) == 1)} another branch than {event.branch}"
                           if named else "a repository no application names")
                    log.info("push to %s (%s) branch %s ignored: %s", event.clone_url, event.repository,
                             event.branch, why)
                    return _ignored(f"a push to {event.clone_url} ({event.repository}) branch {event.branch}: {why}")
                apps = [app]
            case events.ImagePushed():
                app = self.app_of_image(current, event.registry, event.repository)
                if app is None:
                    return _ignored(f"repository {event.registry}/{event.repository} is no application's")
                apps = [app]
            case events.ReconcileDue() | events.PromotionDue():
                apps = list(current.apps)
            case events.Ignored(reason=reason):
                return _ignored(reason)
            case events.Pinged():
                return Routed({"": Outcome("webhook ping")})
            case _:
                raise errors.InvalidEvent(f"no handler for {type(event).__name__}")
        return self._each(apps, lambda engine: engine.handle(event))

    def run(self, job: Job) -> Outcome:
        return self.engine_of_job(job).run(job)

    def across(self, read: Callable[[fleet.App, Engine], object]) -> list[object]:
        """`read` on every application, up to PARALLEL at once, in fleet order (a read: the first failure raises)."""
        apps = list(self.fleet().apps)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(PARALLEL, len(apps)))) as pool:
            return list(pool.map(lambda app: read(app, self._engine(app)), apps))

    def app_of_image(self, current: fleet.Fleet, registry: str, repository: str) -> fleet.App | None:
        app = current.of_image(repository)
        if app is not None:
            return app
        root = next((a for a in current.apps if a.name == self.root), None)
        if root is not None and f"{registry}/{repository}" in self._engine(root).config.allowed_repositories:
            return root
        return None

    def _each(self, apps: list[fleet.App], act: Callable[[Engine], Outcome]) -> Routed:
        """`act` on each application's engine, in parallel when there are several; a failure of one is logged,
        the others go on, and the first is reported (Routed.failure) for the trigger to retry."""
        def one(app: fleet.App) -> Outcome | BaseException:
            try:
                return act(self._engine(app))
            except Exception as e:  # noqa: BLE001 - one application's failure must not stop the others
                if len(apps) > 1:
                    log.warning("application %s: %s: %s", app.name, type(e).__name__, e)
                return e

        if len(apps) == 1:
            results = [one(apps[0])]
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(PARALLEL, len(apps))) as pool:
                results = list(pool.map(one, apps))
        outcomes = {a.name: r for a, r in zip(apps, results, strict=True) if isinstance(r, Outcome)}
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None and len(apps) == 1:
            raise failure
        return Routed(outcomes, failure)


def _ignored(reason: str) -> Routed:
    return Routed({"": Outcome(f"ignored: {reason}")})
