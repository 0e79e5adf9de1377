"""Credentials and storage clients for SHIPBOT_TARGET=azure: Microsoft Entra ID everywhere, no keys.

`credential()` is the one TokenCredential of the Function App: DefaultAzureCredential, which in Azure finds the
app's managed identity (App Service's IDENTITY_ENDPOINT / IDENTITY_HEADER), and on a developer's machine their
`az login`. infra/bicep gives the app a system-assigned identity, which needs no id; a user-assigned one is
picked by its client id (SHIPBOT_MANAGED_IDENTITY_CLIENT_ID, the same id the host's connections would name in
`...__credential=managedidentity` / `...__clientId`). Build it once and share it: it caches tokens.

`blob_container()` is what the wiring hands BlobLedger and BlobModels in Azure mode: a ContainerClient on an
account URL plus that credential. The URL is checked first: in Azure mode a connection string, an account
key or a SAS would be a secret in an app setting, which is what identity-based access exists to avoid, so
such a value is refused, and the message never quotes it.

The Functions bindings (queue trigger/output, AzureWebJobsStorage) do not pass through here: the Functions
host reads their identity-based settings itself (docs/azure-adapters.md lists them).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.storage.blob import ContainerClient

from shared import errors
from shared.adapters import blob_storage

REFRESH_MARGIN_SECONDS = 300.0  # Entra tokens live 60-90 min; five minutes covers any one call with room

# Fragments that only a secret-bearing value has: connection strings, account keys, SAS query parameters.
_SECRET_MARKERS = ("accountkey=", "sharedaccesssignature=", "sig=", ";")


def credential(*, managed_identity_client_id: str = "", **options: Any) -> TokenCredential:
    """DefaultAzureCredential; `managed_identity_client_id` selects a user-assigned identity (empty: the
    system-assigned one). `options` go to DefaultAzureCredential (tests pass none). Imported lazily so that
    the local target never loads azure-identity."""
    from azure.identity import DefaultAzureCredential

    if managed_identity_client_id:
        options.setdefault("managed_identity_client_id", managed_identity_client_id)
    return DefaultAzureCredential(**options)


def blob_account_url(value: str) -> str:
    """The blob endpoint of a storage account, checked: https, no user info, no query (a SAS), not a connection
    string. `https://<account>.blob.core.windows.net` (any cloud's suffix) or a path-style endpoint
    `https://<host>/<account>` (an emulator). Returns it without a trailing slash; errors.PermanentError
    otherwise, naming what is wrong and never the value."""
    text = value.strip()
    if not text:
        raise errors.PermanentError("the storage account URL is empty: set the blob endpoint, "
                                    "https://<account>.blob.core.windows.net")
    lowered = text.lower()
    if any(marker in lowered for marker in _SECRET_MARKERS):
        raise errors.PermanentError("the storage setting holds a connection string, key or SAS; in Azure mode it "
                                    "must be the account's blob endpoint URL (access is by Entra ID)")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise errors.PermanentError("the storage account URL must be an https:// URL "
                                    "(bearer tokens are never sent over plain HTTP)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise errors.PermanentError("the storage account URL must not carry user info, a query or a fragment")
    path = parts.path.strip("/")
    if "/" in path:
        raise errors.PermanentError("the storage account URL names the account, not a container or blob")
    return urllib.parse.urlunsplit(("https", parts.netloc, f"/{path}" if path else "", "", ""))


def blob_container(account_url: str, container: str, credential: TokenCredential,
                   **client_options: Any) -> ContainerClient:
    """A ContainerClient for BlobLedger(container=...) / BlobModels(container=...) with Entra ID auth.
    `client_options` go to the SDK client (retry_total=..., connection_verify=... in tests)."""
    return blob_storage.container_from_account_url(blob_account_url(account_url), credential, container,
                                                   **client_options)


class CachedToken:
    """A bearer token for one scope from `credential`, asked for again `margin_seconds` before it expires
    (`clock` is epoch seconds, as AccessToken.expires_on is), for clients that take a token rather than a
    TokenCredential (the kubernetes client, Azure DevOps over httpx). Thread-safe. `audience` names the
    service in errors: a refused credential is a PermanentError, an unreachable identity endpoint transient."""

    def __init__(self, credential: TokenCredential, scope: str, *, audience: str,
                 margin_seconds: float = REFRESH_MARGIN_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.credential, self.scope, self.audience = credential, scope, audience
        self.margin, self.clock = margin_seconds, clock
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._token is None or self._token.expires_on - self.margin <= self.clock():
                try:
                    self._token = self.credential.get_token(self.scope)
                except ClientAuthenticationError as e:
                    raise errors.PermanentError(f"no Entra ID token for {self.audience}: {type(e).__name__}") from None
                except AzureError as e:
                    raise errors.TransientError(f"no Entra ID token for {self.audience}: {type(e).__name__}") from None
            return self._token.token
