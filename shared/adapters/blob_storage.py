"""What BlobLedger and BlobModels share: building a ContainerClient and translating SDK errors.

Both adapters take a ready `ContainerClient` (tests hand one in); these helpers build it from a connection
string (Azurite, or an account key / SAS in Azure) or from an account URL plus a TokenCredential (a managed
identity in Azure). `boundary(what)` turns every Azure SDK error that reaches it into `errors.TransientError`
whose message names the operation, the HTTP status and the storage error code, never a URL, key or SAS token:
a connection error's own text (urllib3's) quotes the request URL with its query string, so it is not chained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from azure.core import exceptions as azure_errors
from azure.core.credentials import TokenCredential
from azure.storage.blob import ContainerClient, ExponentialRetry

from shared import errors


def container_from_connection_string(conn: str, container_name: str, **client_options: Any) -> ContainerClient:
    """`client_options` go to the SDK client (retry_total=..., connection_timeout=...).

    Against the emulator (the account devstoreaccount1) a retryable error is retried after 1 s, not the SDK's
    15: Azurite on MariaDB answers 500 when two conditional writes of one blob deadlock (the losing transaction
    is rolled back, so the retry is safe), which Azure Storage does not do. A caller's own retry options win.
    """
    if ("devstoreaccount1" in conn or "UseDevelopmentStorage=true" in conn) and \
            not any(key.startswith("retry_") for key in client_options):
        client_options.setdefault("retry_policy", ExponentialRetry(initial_backoff=1, increment_base=2))
    try:
        return ContainerClient.from_connection_string(conn, container_name, **client_options)
    except ValueError:
        # The SDK's message may quote the connection string.
        raise errors.PermanentError("the storage connection string is not usable") from None


def container_from_account_url(url: str, credential: TokenCredential, container_name: str,
                               **client_options: Any) -> ContainerClient:
    """`url` is the blob endpoint, https://<account>.blob.core.windows.net (no SAS: use a credential)."""
    return ContainerClient(url, container_name, credential=credential, **client_options)


@contextlib.contextmanager
def boundary(what: str) -> Iterator[None]:
    """SDK errors inside -> errors.TransientError("<what>: ..."); errors.* raised inside pass through."""
    try:
        yield
    except azure_errors.HttpResponseError as e:
        code = e.error_code or e.reason or type(e).__name__
        raise errors.TransientError(f"{what}: blob storage answered {e.status_code} {code}") from e
    except azure_errors.AzureError as e:
        # ServiceRequestError and friends: their text quotes the URL, SAS token included, hence `from None`.
        raise errors.TransientError(f"{what}: blob storage did not answer ({type(e).__name__})") from None


def error_code(e: azure_errors.HttpResponseError) -> str:
    return str(e.error_code or "")
