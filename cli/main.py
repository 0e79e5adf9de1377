"""`shipbot`, the operator's command line: `up`/`down` run the local stack; every other verb is a client of
ShipBot's HTTP API, the same against the local host and a function app in Azure (docs/cli.md).

Settings come from the environment, read here and nowhere else:
  SHIPBOT_API_URL    the function app (default http://127.0.0.1:7071, the local host)
  SHIPBOT_API_KEY    its function key; unset and the URL local: the local host's default key
                     from $SHIPBOT_STATE/host-keys.json
  SHIPBOT_ACTOR      who asks, as the ledger records it (default $USER@hostname)
  SHIPBOT_APP        the application every verb is about (--app; optional when the fleet has one)
  SHIPBOT_STATE      the local stack's state directory (default /var/lib/shipbot)

Exit codes: 0 done; 1 the API refused or failed, no answer, the rollout failed or the stack did not come
up; 2 usage; 3 `--wait` gave up (the rollout may still finish); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from cli import commands, up_down
from cli.client import DEFAULT_URL, ApiError, Client, InvalidArgument, Unreachable, is_local
from stack import lifecycle

USAGE, INTERRUPTED = 2, 130
DEFAULT_STATE = Path("/var/lib/shipbot")


@dataclass(frozen=True, slots=True)
class Settings:
    api_url: str = DEFAULT_URL
    api_key: str | None = None
    actor: str | None = None
    state: Path = DEFAULT_STATE
    app: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(api_url=env.get("SHIPBOT_API_URL") or DEFAULT_URL, api_key=env.get("SHIPBOT_API_KEY") or None,
                   actor=env.get("SHIPBOT_ACTOR") or None, state=Path(env.get("SHIPBOT_STATE") or DEFAULT_STATE),
                   app=env.get("SHIPBOT_APP") or None)

    def key(self) -> str | None:
        """The explicit key, else (only for a local URL: never send a local key elsewhere) the local host's."""
        if self.api_key:
            return self.api_key
        return lifecycle.host_key(self.state, "default") if is_local(self.api_url) else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shipbot", description="ShipBot: release app code + model as one image.")
    app = argparse.ArgumentParser(add_help=False)  # --app before or after the verb
    app.add_argument("--app", metavar="APP", default=argparse.SUPPRESS,
                     help="the application (default $SHIPBOT_APP; optional when the fleet has one)")
    p.add_argument("--app", metavar="APP", default=None, help=argparse.SUPPRESS)
    subparsers = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, **kwargs) -> argparse.ArgumentParser:  # every verb of the API takes --app
        return subparsers.add_parser(name, parents=[] if name in ("up", "down") else [app], **kwargs)

    up = verb("up", help="start the local stack (idempotent)")
    up.add_argument("--port", type=int, default=7071, help="the local host's port (default 7071)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the host (default 180)")
    up.set_defaults(run=up_down.up)
    down = verb("down", help="stop the local host and the stack's daemons")
    down.add_argument("--purge", action="store_true", help="also remove the environment containers")
    down.add_argument("--timeout", type=float, default=20.0, help="seconds before SIGKILL (default 20)")
    down.set_defaults(run=up_down.down)

    s = verb("status", help="every application's environments (one app's: and its recent releases)")
    _json(s), _limit(s, 10)
    s.set_defaults(run=commands.status)
    s = verb("releases", help="the most recent releases, newest first")
    _json(s), _limit(s, 20)
    s.set_defaults(run=commands.releases)
    s = verb("release", help="one release: details and history")
    s.add_argument("release_id", metavar="RELEASE_ID")
    _json(s)
    s.set_defaults(run=commands.release)
    s = verb("build", help="plan (and build) the release of a commit and a model")
    s.add_argument("--commit", help="a commit sha (default: the release branch's head)")
    s.add_argument("--model", metavar="NAME/VERSION", help="default: the current model")
    _json(s)
    s.set_defaults(run=commands.build)

    s = verb("deploy", help="deploy a release (or an image digest) to an environment")
    s.add_argument("environment", metavar="ENV", help="an environment of the application's chain")
    s.add_argument("release_id", metavar="RELEASE_ID", nargs="?", help="a release id (r-... or i-...)")
    s.add_argument("--digest", metavar="sha256:...", help="instead of RELEASE_ID: the release of this image")
    _rollout(s, force=True)
    s.set_defaults(run=commands.deploy)
    s = verb("promote", help="promote a release (default: the newest verified on the environment "
                             "before) to an environment (default: the last of the chain)")
    s.add_argument("release_id", metavar="RELEASE_ID", nargs="?",
                   help="default: the newest release verified on the environment before that is newer")
    s.add_argument("--to", metavar="ENV", help="the environment (default: the last of the chain, production)")
    _rollout(s, force=True)
    s.set_defaults(run=commands.promote)
    s = verb("approve", help="let a release through an environment's approval gate")
    s.add_argument("approve_app", metavar="APP", help="the application")
    s.add_argument("environment", metavar="ENV", help="the environment whose chain entry says approval: true")
    s.add_argument("release_id", metavar="RELEASE_ID")
    _rollout(s, force=False)
    s.set_defaults(run=commands.approve)
    s = verb("override", help="let a release the quality gate failed go on (the ledger keeps who and why)")
    s.add_argument("release_id", metavar="RELEASE_ID")
    _rollout(s, force=False)
    s.set_defaults(run=commands.override)
    s = verb("rollback", help="roll an environment back to what it ran before")
    s.add_argument("environment", metavar="ENV", help="an environment of the application's chain")
    _rollout(s, force=False)
    s.set_defaults(run=commands.rollback)

    for name, run, text in (("hold", commands.hold, "keep automatic paths away from a release"),
                            ("unhold", commands.unhold, "let automatic paths use a release again")):
        s = verb(name, help=text)
        s.add_argument("release_id", metavar="RELEASE_ID")
        s.add_argument("--reason", required=name == "hold", help="why: the ledger records it")
        _json(s)
        s.set_defaults(run=run)

    s = verb("history", help="an environment's whole history, oldest first, archived entries included")
    s.add_argument("environment", metavar="ENV", help="an environment of the application's chain")
    s.add_argument("--limit", type=count, help="only the last N entries")
    _json(s)
    s.set_defaults(run=commands.history)
    s = verb("apply", help="apply a fleet file: the applications and their environments")
    s.add_argument("-f", "--file", required=True, metavar="FILE", help="the fleet file (YAML); - reads stdin")
    s.add_argument("--reason", help="why: the ledger keeps it with the version")
    _json(s)
    s.set_defaults(run=commands.apply)
    s = verb("config", help="the fleet file in force (or an earlier version), or --history")
    s.add_argument("--version", type=count, help="an earlier version")
    s.add_argument("--history", action="store_true", help="every version applied: who, when, why")
    _json(s)
    s.set_defaults(run=commands.config)

    s = verb("logs", help="the ledger's history lines, in time order")
    s.add_argument("release_id", metavar="RELEASE_ID", nargs="?", help="one release's history only")
    s.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    s.add_argument("--interval", type=seconds, default=2.0, help="seconds between polls with --follow")
    _limit(s, 20, what="releases to merge when no RELEASE_ID is given")
    s.set_defaults(run=commands.logs)
    return p


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None,
         transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic, tty: bool | None = None) -> int:
    """The console script. `environ`, `transport`, `sleep`, `clock` and `tty` are for tests."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage (exit 2) or the help (exit 0)
        return e.code if isinstance(e.code, int) else USAGE
    settings = Settings.from_env(os.environ if environ is None else environ)
    try:
        if args.run in (up_down.up, up_down.down):
            return args.run(args, settings.state, os.environ if environ is None else environ)
        app = getattr(args, "approve_app", None) or getattr(args, "app", None) or settings.app
        with Client(settings.api_url, key=settings.key(), actor=settings.actor, transport=transport,
                    app=app) as client:
            return args.run(args, commands.Context(client, sleep=sleep, clock=clock, tty=tty))
    except (commands.Usage, InvalidArgument) as e:
        print(f"shipbot: {e}", file=sys.stderr)
        return USAGE
    except (ApiError, Unreachable, lifecycle.StackError) as e:
        print(f"shipbot: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return INTERRUPTED


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's JSON")


def _limit(p: argparse.ArgumentParser, default: int, *, what: str = "releases to show") -> None:
    p.add_argument("--limit", type=count, default=default, help=f"{what} (default {default})")


def _rollout(p: argparse.ArgumentParser, *, force: bool) -> None:
    p.add_argument("--reason", required=not force, help="why: the ledger records it")
    if force:
        p.add_argument("--force", action="store_true",
                       help="past the automatic rules (downgrade, held, rolled back, not on staging); needs --reason")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                   help="wait until the environment runs the release (default: when stderr is a terminal)")
    p.add_argument("--timeout", type=seconds, default=600.0, help="seconds --wait waits (default 600)")
    p.add_argument("--interval", type=seconds, default=1.0, help=argparse.SUPPRESS)
    _json(p)


def seconds(text: str) -> float:  # the function's name is argparse's word for a bad value
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def count(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
