"""How KubernetesDeployer reaches its cluster: a kubernetes ApiClient for AKS (Entra ID) or for any cluster
(a kubeconfig).

AKS: ARM's listClusterUserCredential (azure-mgmt-containerservice) gives the cluster user's kubeconfig; only its
cluster part is used: the API server URL and the CA that signed its certificate. Its user (an exec plugin,
kubelogin, which a Function App does not have) is ignored: the client authenticates with an Entra ID token for
the AKS server application (AKS_SCOPE) from the app's TokenCredential, its managed identity in Azure. The token
is put on the client by the Configuration's `refresh_api_key_hook`, which asks the credential for a new one when
the current one expires within REFRESH_MARGIN_SECONDS, so a long rollout never carries an expired token. The
cluster must use AKS-managed Entra ID integration, with the identity bound to a Role in each namespace (Azure
RBAC for Kubernetes or a RoleBinding to its object id).

Any other cluster: a kubeconfig file, read by the kubernetes library as kubectl reads it (tokens, client
certificates, exec plugins), through `kubeconfig_api_client`.

The ARM call needs Microsoft.ContainerService/managedClusters/listClusterUserCredential/action on the cluster
(the built-in "Azure Kubernetes Service Cluster User Role"). Nothing here logs or repeats a token or the
kubeconfig's user part.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from kubernetes import client

from shared import errors
from shared.adapters.azure import credentials

AKS_SERVER_APP = "6dae42f8-4368-4678-94ff-3960e28e3630"  # the AKS Entra ID server application, every cloud
AKS_SCOPE = f"{AKS_SERVER_APP}/.default"
REFRESH_MARGIN_SECONDS = credentials.REFRESH_MARGIN_SECONDS


@dataclass(frozen=True, slots=True)
class Cluster:
    server: str            # https://<fqdn>:443
    ca_pem: bytes | None   # None: the system's trust store


def parse_kubeconfig(text: str | bytes, *, context: str | None = None) -> Cluster:
    """The cluster of a kubeconfig's `context` (default: its current-context, else its only cluster). The user
    part is never read, and no error quotes the document."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise errors.PermanentError("the kubeconfig is not YAML") from None
    if not isinstance(doc, dict):
        raise errors.PermanentError("the kubeconfig is not a kubeconfig document")
    clusters = {c.get("name"): c.get("cluster") or {} for c in doc.get("clusters") or () if isinstance(c, dict)}
    contexts = {c.get("name"): c.get("context") or {} for c in doc.get("contexts") or () if isinstance(c, dict)}
    wanted = context or doc.get("current-context")
    if wanted:
        if wanted not in contexts:
            raise errors.PermanentError(f"the kubeconfig has no context {wanted!r}")
        name = contexts[wanted].get("cluster")
    elif len(clusters) == 1:
        name = next(iter(clusters))
    else:
        raise errors.PermanentError("the kubeconfig names no current-context and has more than one cluster")
    cluster = clusters.get(name)
    if not cluster or not str(cluster.get("server", "")).startswith("https://"):
        raise errors.PermanentError(f"the kubeconfig's cluster {name!r} has no https:// server")
    ca = cluster.get("certificate-authority-data")
    try:
        ca_pem = base64.b64decode(ca, validate=True) if ca else None
    except ValueError:
        raise errors.PermanentError(f"the kubeconfig's cluster {name!r} has a CA that is not base64") from None
    return Cluster(server=cluster["server"].rstrip("/"), ca_pem=ca_pem)


class TokenRefresher:
    """A kubernetes Configuration's refresh_api_key_hook: keeps a bearer token from `credential` on it, asking
    for a new one REFRESH_MARGIN_SECONDS before the current one expires (`clock` is epoch seconds, as
    AccessToken.expires_on is). Thread-safe: one ApiClient serves concurrent rollouts."""

    def __init__(self, credential: TokenCredential, *, scope: str = AKS_SCOPE,
                 margin_seconds: float = REFRESH_MARGIN_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.token = credentials.CachedToken(credential, scope, audience="AKS", margin_seconds=margin_seconds,
                                             clock=clock)

    def __call__(self, configuration: client.Configuration) -> None:
        configuration.api_key["BearerToken"] = self.token()
        configuration.api_key_prefix["BearerToken"] = "Bearer"


def configuration(cluster: Cluster, credential: TokenCredential, *,
                  clock: Callable[[], float] = time.time) -> client.Configuration:
    """A Configuration for `cluster` that authenticates with fresh Entra ID tokens from `credential`."""
    config = client.Configuration(host=cluster.server,
                                  ca_cert_data=cluster.ca_pem.decode() if cluster.ca_pem else None)
    config.refresh_api_key_hook = TokenRefresher(credential, clock=clock)
    config.api_key["BearerToken"] = ""  # the client calls the hook only when the key is there; the hook fills it
    config.api_key_prefix["BearerToken"] = "Bearer"
    return config


def parse_cluster_id(resource_id: str) -> dict[str, str]:
    """SHIPBOT_AKS_RESOURCE_ID, `/subscriptions/<s>/resourceGroups/<g>/providers/Microsoft.ContainerService/
    managedClusters/<name>` -> the keyword arguments of aks_cluster and api_client."""
    parts = resource_id.strip().strip("/").split("/")
    if len(parts) != 8 or [p.lower() for p in parts[0:8:2]] != [
            "subscriptions", "resourcegroups", "providers", "managedclusters"] or \
            parts[5].lower() != "microsoft.containerservice" or not all(parts[1:8:2]):
        raise errors.PermanentError("the AKS resource id must be /subscriptions/<id>/resourceGroups/<group>/"
                                    "providers/Microsoft.ContainerService/managedClusters/<name>")
    return {"subscription_id": parts[1], "resource_group": parts[3], "cluster": parts[7]}


def aks_cluster(credential: TokenCredential, *, subscription_id: str, resource_group: str, cluster: str,
                **arm_options: Any) -> Cluster:
    """The AKS cluster's server and CA, from ARM's listClusterUserCredential. `arm_options` go to the
    ContainerServiceClient (base_url=..., connection_verify=... in tests)."""
    from azure.mgmt.containerservice import ContainerServiceClient

    what = f"AKS cluster {resource_group}/{cluster}"
    try:
        with ContainerServiceClient(credential, subscription_id, **arm_options) as arm:
            results = arm.managed_clusters.list_cluster_user_credentials(resource_group, cluster)
    except ResourceNotFoundError:
        raise errors.NotFound(f"{what} does not exist in subscription {subscription_id}") from None
    except ClientAuthenticationError as e:
        raise errors.PermanentError(f"ARM refused the cluster user credentials of {what}: "
                                    f"{getattr(e, 'status_code', '')} (needs the AKS Cluster User role)") from None
    except HttpResponseError as e:
        kind = errors.PermanentError if e.status_code in (400, 403) else errors.TransientError
        raise kind(f"ARM answered {e.status_code} for the cluster user credentials of {what}") from None
    except AzureError as e:
        raise errors.TransientError(f"ARM did not answer for {what}: {type(e).__name__}") from None
    kubeconfigs = [k for k in results.kubeconfigs or () if k.value]
    if not kubeconfigs:
        raise errors.PermanentError(f"ARM returned no kubeconfig for {what}")
    return parse_kubeconfig(bytes(kubeconfigs[0].value))


def api_client(credential: TokenCredential, *, subscription_id: str, resource_group: str, cluster: str,
               clock: Callable[[], float] = time.time, **arm_options: Any) -> client.ApiClient:
    """The ApiClient KubernetesDeployer takes on AKS: server and CA from ARM, tokens from `credential`."""
    found = aks_cluster(credential, subscription_id=subscription_id, resource_group=resource_group, cluster=cluster,
                        **arm_options)
    return client.ApiClient(configuration(found, credential, clock=clock))


def kubeconfig_api_client(path: str, *, context: str | None = None) -> client.ApiClient:
    """The ApiClient for any other cluster, from a kubeconfig file (as kubectl reads it)."""
    from kubernetes import config

    try:
        return config.new_client_from_config(config_file=path, context=context)
    except (config.ConfigException, OSError) as e:
        raise errors.PermanentError(f"cannot use the kubeconfig {path}: {type(e).__name__}") from None
