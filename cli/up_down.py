"""`shipbot up` and `shipbot down`: stack.lifecycle with progress on stderr and the stack's URLs on stdout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from cli.progress import Progress
from stack import lifecycle


def up(args: argparse.Namespace, state: Path, environ: Mapping[str, str]) -> int:
    stack = lifecycle.Stack(state=state, port=args.port, environ=environ)
    with Progress(sys.stderr) as progress:
        done = lifecycle.up(stack, timeout_s=args.timeout, note=progress.note, progress=progress.update)
    how = "started" if done.started else "already running"
    pid = f", pid {done.pid}" if done.pid else ""
    print(f"ShipBot is up in {done.seconds:.1f}s (host {how}{pid})")
    for name, url in urls(stack):
        print(f"  {name:<12} {url}")
    return 0


def down(args: argparse.Namespace, state: Path, environ: Mapping[str, str]) -> int:
    stack = lifecycle.Stack(state=state, environ=environ)
    with Progress(sys.stderr) as progress:
        lifecycle.down(stack, purge=args.purge, timeout_s=args.timeout, note=progress.note)
    kept = "removed" if args.purge else "kept (`shipbot down --purge` removes them)"
    print(f"ShipBot is down; environment containers {kept}")
    return 0


def urls(stack: lifecycle.Stack) -> list[tuple[str, str]]:
    registry = stack.environ.get("SHIPBOT_REGISTRY") or "127.0.0.1:5000"
    return [
        ("API", f"{stack.url}/api"),
        ("registry", f"http://{registry}/v2/"),
        ("blob", "http://127.0.0.1:10000/devstoreaccount1"),
        ("queue", "http://127.0.0.1:10001/devstoreaccount1"),
        ("staging", "http://127.0.0.1:8081"),
        ("production", "http://127.0.0.1:8080"),
        ("host log", str(stack.log_file)),
        ("keys", f"{stack.keys_file} (the CLI reads it; elsewhere set SHIPBOT_API_KEY)"),
    ]
