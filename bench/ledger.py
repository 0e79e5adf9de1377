#!/usr/bin/env python3
"""bench/ledger: what a trigger reads from the ledger as it grows, on Azurite.

For each size, a fresh container gets N releases (all green but the newest two, one building and one built;
staging runs the newest green one), written through BlobLedger so that the release index is there. Then it
times what one reconcile reads, cold (a new BlobLedger, as a cold Function instance) and warm (the same one
again):

    index   what reconcile reads now: releases in flight (index/in-flight/) and the releases no older than
            what staging runs (index/by-time/, read only as far as needed)
    full    what it read before the index: every release document (list_releases)

Prints seconds only; nothing is asserted. Needs Azurite (`make stack`).

    PYTHONPATH=. .venv/bin/python bench/ledger.py [--sizes 100,1000,3000]
"""

from __future__ import annotations

import argparse
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from azure.storage.blob import ContainerClient

from shared.adapters.blob_ledger import BlobLedger
from shared.releases import Release, Status
from shared.settings import AZURITE

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def populate(ledger: BlobLedger, size: int) -> Release:
    def release(n: int) -> Release:
        status = Status.BUILDING if n == size - 1 else Status.BUILT if n == size - 2 else Status.GREEN
        return Release(id=f"r-{n:016x}", created=T0 + timedelta(minutes=n), trigger="bench",
                       repository="127.0.0.1:5000/shipbot/app", tag=f"r-{n:016x}", status=status,
                       digest="sha256:" + f"{n:064x}")

    releases = [release(n) for n in range(size)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(ledger.create_release, releases))
    return releases[size - 3]  # what staging runs: the newest green


def reconcile_reads(ledger: BlobLedger, current: Release) -> int:
    return len(ledger.list_in_flight()) + len(ledger.releases_since(current.created))


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,3000")
    args = parser.parse_args()
    print(f"{'releases':>9} {'index cold':>11} {'index warm':>11} {'full cold':>10} {'full warm':>10}   (seconds)")
    for size in (int(n) for n in args.sizes.split(",")):
        name = f"bench-ledger-{uuid.uuid4().hex[:8]}"
        ledger = BlobLedger.from_connection_string(AZURITE, name)
        current = populate(ledger, size)
        try:
            cold = BlobLedger.from_connection_string(AZURITE, name)
            index_cold = timed(lambda: reconcile_reads(cold, current))
            index_warm = timed(lambda: reconcile_reads(cold, current))
            full = BlobLedger.from_connection_string(AZURITE, name)
            full_cold = timed(full.list_releases)
            full_warm = timed(full.list_releases)
            print(f"{size:>9} {index_cold:>11.3f} {index_warm:>11.3f} {full_cold:>10.3f} {full_warm:>10.3f}", flush=True)
        finally:
            ContainerClient.from_connection_string(AZURITE, name).delete_container()


if __name__ == "__main__":
    main()
