"""ArmImageImport: ACR copies an image into itself, server side, through Azure Resource Manager
(`registries.begin_import_image` of azure-mgmt-containerregistry). AcrRegistry.promote uses it when given one.

Import keeps the digest (ACR copies the manifest and blobs as they are) and moves no bytes through the Function.
The source is this registry itself or another ACR by its ARM resource id (the identity needs AcrPull there,
and Contributor-level `importImage/action` on the target), or any other registry by its login server
(anonymous pull only: no registry passwords are handled here). `force` maps to mode Force (move an existing
target tag) and NoForce (the import fails if the tag exists; AcrRegistry checks the tag first, so a
redelivered promotion returns early instead of failing).

The call is a long-running operation: POST .../importImage answers 202 with Azure-AsyncOperation and Location
headers, and the SDK's ARMPolling polls until the operation is Succeeded, Failed or Canceled. This waits for
the result up to `timeout_seconds` (default 300 s: half of host.json's 10-minute functionTimeout, so the
invocation still ends in time to report); an import still running then is a TransientError (the retry finds the tag
in place, or imports again). A failed operation, or a 4xx on the POST, is a PermanentError carrying ARM's error
code; a 5xx, 408, 429 or a connection error is a TransientError. Messages carry no tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from azure.core import exceptions as azure_errors
from azure.core.credentials import TokenCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import ImportImageParameters, ImportMode, ImportSource

from shared import errors

RESOURCE_ID = "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerRegistry/registries/{}"
RESOURCE_ID_PATTERN = re.compile(r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)/providers/"
                                 r"Microsoft\.ContainerRegistry/registries/(?P<name>[^/]+)", re.IGNORECASE)


class ArmImageImport:
    def __init__(self, *, subscription_id: str, resource_group: str, registry_name: str,
                 credential: TokenCredential | None = None, client: ContainerRegistryManagementClient | None = None,
                 source_resource_ids: Mapping[str, str] | None = None, timeout_seconds: float = 300.0,
                 polling_seconds: float = 5.0, arm_endpoint: str | None = None, **client_options: Any) -> None:
        """The target registry is `registry_name` in `resource_group` of `subscription_id`. `source_resource_ids`
        maps another ACR's login server to its resource id. `polling_seconds` is the status poll interval when
        ARM sends no Retry-After. `arm_endpoint` None: the public cloud's. Give `credential` or `client`;
        `client_options` go to the management client (connection_verify=... in tests)."""
        if client is None and credential is None:
            raise ValueError("ArmImageImport needs a credential or a client")
        self._resource_group = resource_group
        self._registry_name = registry_name
        self._resource_id = RESOURCE_ID.format(subscription_id, resource_group, registry_name)
        self._sources = dict(source_resource_ids or {})
        self._timeout = timeout_seconds
        self._polling = polling_seconds
        self._client = client or ContainerRegistryManagementClient(credential, subscription_id, base_url=arm_endpoint,
                                                                   **client_options)

    @classmethod
    def from_resource_id(cls, registry_resource_id: str, **options: Any) -> ArmImageImport:
        """From the target registry's ARM id (SHIPBOT_REGISTRY_RESOURCE_ID); `options` are the constructor's."""
        match = RESOURCE_ID_PATTERN.fullmatch(registry_resource_id.strip().rstrip("/"))
        if match is None:
            raise errors.PermanentError("the registry resource id is not /subscriptions/<id>/resourceGroups/<group>/"
                                        "providers/Microsoft.ContainerRegistry/registries/<name>")
        return cls(subscription_id=match["subscription"], resource_group=match["group"],
                   registry_name=match["name"], **options)

    def import_image(self, *, source_host: str | None, source_repository: str, digest: str,
                     target_repository: str, tag: str, force: bool) -> None:
        target = f"{self._registry_name}/{target_repository}:{tag}"
        source = ImportSource(source_image=f"{source_repository}@{digest}",
                              **self._source(source_host))
        parameters = ImportImageParameters(source=source, target_tags=[f"{target_repository}:{tag}"],
                                           mode=ImportMode.FORCE if force else ImportMode.NO_FORCE)
        what = f"importing {source_repository}@{digest} into {target}"
        try:
            poller = self._client.registries.begin_import_image(self._resource_group, self._registry_name,
                                                                parameters, polling_interval=self._polling)
            poller.result(timeout=self._timeout)
        except azure_errors.HttpResponseError as e:
            raise _translate(what, e) from None
        except azure_errors.AzureError as e:
            raise errors.TransientError(f"{what}: ARM did not answer ({type(e).__name__})") from None
        if not poller.done():
            raise errors.TransientError(f"{what}: still running after {self._timeout:g} s")

    def close(self) -> None:
        self._client.close()

    def _source(self, host: str | None) -> dict[str, str]:
        if host is None:
            return {"resource_id": self._resource_id}
        if host in self._sources:
            return {"resource_id": self._sources[host]}
        return {"registry_uri": host}


def _translate(what: str, e: azure_errors.HttpResponseError) -> errors.ReleaseError:
    """ARM's error code and message (they name resources, never credentials); an operation that failed has no
    HTTP status of its own and is permanent, as are 4xx answers but 408 and 429."""
    code = (e.error.code if e.error is not None else None) or e.reason or type(e).__name__
    message = (e.error.message if e.error is not None else "") or ""
    detail = f"{what}: {code}" + (f": {message[:300]}" if message else "")
    status = e.status_code or 0
    if isinstance(e, azure_errors.ClientAuthenticationError) and not status:
        return errors.TransientError(f"{what}: no token for ARM ({type(e).__name__})")
    if status >= 500 or status in (408, 429):
        return errors.TransientError(detail)
    return errors.PermanentError(detail)
