"""Every identity of infra/bicep has exactly the roles in the tables below, each on the scope named there, and
nothing else: the Function App's Azure roles, the AKS kubelet's, the model uploaders', Event Grid's topics', the
custom ACR role's actions, and the Kubernetes Role the function gets inside the cluster. Each row says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pycep.models import BicepElement

from tests import bicep_reader as bicep

BUILTIN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "577a9874-89fd-4f24-9dbd-b5034d0ad23a": "Container Registry Data Importer and Data Reader",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "4abbcc35-e782-43d8-92c5-2d3f1bd2253f": "Azure Kubernetes Service Cluster User Role",
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
}
ACR_TASK_RUNNER = "ShipBot ACR task runner (custom)"

# (identity, role, scope type, scope name as written in the template) -> why it is needed.
EXPECTED_ROLES = {
    ("function", "Storage Blob Data Owner", "storageAccounts", "hostAccountName"):
        "AzureWebJobsStorage (keys, timer schedules, singleton locks) and the Flex deployment package: the host's "
        "documented role, on the host's own account, which holds nothing of ShipBot's data",
    ("function", "Storage Blob Data Contributor", "containers", "modelsContainerName"):
        "BlobModels lists and reads the models and caches each model's sha256 in its metadata (a write)",
    ("function", "Storage Blob Data Contributor", "containers", "ledgerContainerName"):
        "BlobLedger reads and writes the release documents and takes the environment leases",
    ("function", "Storage Queue Data Contributor", "queues", "jobsQueueName"):
        "run_job's queue trigger (read, update, delete) and every queue output (add, create if missing)",
    ("function", "Storage Queue Data Contributor", "queues", "${jobsQueueName}-poison"):
        "the host moves a message that failed maxDequeueCount times here (create if missing, add)",
    ("function", "Monitoring Metrics Publisher", "components", "appInsightsName"):
        "telemetry with the identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING); the component has no local auth",
    ("function", "Key Vault Secrets User", "secrets", "githubSecretName"): "SHIPBOT_GITHUB_SECRET's reference",
    ("function", "Key Vault Secrets User", "secrets", "azureDevOpsSecretName"):
        "SHIPBOT_AZURE_DEVOPS_SECRET's reference",
    ("function", "Key Vault Secrets User", "secrets", "notifySecretName"):
        "SHIPBOT_NOTIFY_URL's reference (only when a URL was given)",
    ("function", "Key Vault Secrets User", "secrets", "gitTokenSecretName"):
        "SHIPBOT_GIT_TOKEN's reference (only when a token was given): GitHubSource or AzureReposSource",
    ("function", ACR_TASK_RUNNER, "registries", "registryName"):
        "AcrTasksBuilder and AcrTaskSmokeRunner: listBuildSourceUploadUrl, scheduleRun, runs get, runs "
        "listLogSasUrl, runs cancel; Container Registry Tasks Contributor would add task, agent pool and task "
        "run management",
    ("function", "Container Registry Data Importer and Data Reader", "registries", "registryName"):
        "AcrRegistry: get_image reads manifests and config blobs (pull), promote imports by digest (importImage); "
        "no push: ACR Tasks pushes with the registry's own rights",
    ("function", "Azure Kubernetes Service Cluster User Role", "managedClusters", "clusterName"):
        "KubernetesDeployer: listClusterUserCredential for the API server's URL and CA (what it may do in the "
        "cluster is the namespaced Role of kubernetes.bicep)",
    ("aks kubelet", "AcrPull", "registries", "registryName"): "the nodes pull the release images",
    ("model uploaders", "Storage Blob Data Contributor", "containers", "modelsContainerName"):
        "az storage blob upload --auth-mode login into the models container, nowhere else",
    ("storage topic", "Storage Blob Data Contributor", "containers", "deadLetterContainerName"):
        "Event Grid dead-letters undeliverable BlobCreated events with the topic's identity",
    ("registry topic", "Storage Blob Data Contributor", "containers", "deadLetterContainerName"):
        "Event Grid dead-letters undeliverable ImagePushed events with the topic's identity",
    ("function", "AzureML Data Scientist", "workspaces", "mlWorkspaceName"):
        "MlflowModels reads the workspace's registered model versions and their artifacts, and tags each version "
        "with its sha256 (a write); only when mlWorkspaceName is given",
    ("workspace topic", "Storage Blob Data Contributor", "containers", "deadLetterContainerName"):
        "Event Grid dead-letters undeliverable ModelRegistered events with the topic's identity",
}

ACR_TASK_RUNNER_ACTIONS = {
    "Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action",
    "Microsoft.ContainerRegistry/registries/scheduleRun/action",
    "Microsoft.ContainerRegistry/registries/runs/read",
    "Microsoft.ContainerRegistry/registries/runs/listLogSasUrl/action",
    "Microsoft.ContainerRegistry/registries/runs/cancel/action",
}

# The Kubernetes RBAC rules of kubernetes.bicep's Role: what KubernetesDeployer calls, on its objects only.
# In each namespace, the Role names the Deployments of the targets there and their Services as the proxy URL does.
EXPECTED_K8S_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "resourceNames": "map(filter(targets, target => ns == target.namespace), target => target.deployment)",
     "verbs": ["get", "patch", "watch"]},
    {"apiGroups": [""], "resources": ["services/proxy"],
     "resourceNames": "map(filter(targets, target => ns == target.namespace), "
                      "target => '${target.service}:${serviceProxyPort}')",
     "verbs": ["get"]},
]



@dataclass(frozen=True)
class Assignment:
    file: str
    symbol: str
    identity: str
    role: str
    scope_type: str
    scope_name: str


IDENTITIES = {"functionPrincipalId": "function", "kubeletObjectId": "aks kubelet", "uploader": "model uploaders",
              "storageTopic": "storage topic", "registryTopic": "registry topic", "mlTopic": "workspace topic"}


def role_assignments() -> list[Assignment]:
    found = []
    for tpl in bicep.all_templates():
        for symbol, resource in tpl.resources_of("Microsoft.Authorization/roleAssignments").items():
            properties = bicep.body(resource)["properties"]
            principal = bicep.accessor(properties["principalId"])
            assert principal and principal[0] in IDENTITIES, f"{tpl.path.name} {symbol}: unknown principal"
            scope = bicep.body(resource).get("scope")
            assert isinstance(scope, BicepElement), f"{tpl.path.name} {symbol}: no resource scope"
            target = tpl.resource(scope)
            found.append(Assignment(tpl.path.name, symbol, IDENTITIES[principal[0]], _role_name(tpl, properties),
                                    target["type"].rsplit("/", 1)[-1], str(bicep.body(target)["name"])))
    return found


def _role_name(tpl: bicep.Template, properties: dict[str, Any]) -> str:
    definition = properties["roleDefinitionId"]
    if isinstance(definition, dict) and "function" in definition:
        parameters = definition["function"]["parameters"]
        assert parameters["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        return BUILTIN_ROLES[parameters["resource_name_1"]]
    symbol, *path = bicep.accessor(definition)
    assert path == ["id"] and tpl.resource(symbol)["type"] == "Microsoft.Authorization/roleDefinitions"
    assert symbol == "acrTaskRunner", "a custom role this test does not know"
    return ACR_TASK_RUNNER


def test_every_identity_has_exactly_the_expected_roles_on_the_expected_scopes() -> None:
    found = {(a.identity, a.role, a.scope_type, a.scope_name): a for a in role_assignments()}
    assert len(found) == len(role_assignments()), "an assignment is made twice"
    assert set(found) - set(EXPECTED_ROLES) == set(), "unexpected role assignments"
    assert set(EXPECTED_ROLES) - set(found) == set(), "missing role assignments"


def test_the_function_has_no_role_on_the_data_account_itself() -> None:
    on_accounts = [a for a in role_assignments() if a.scope_type == "storageAccounts"]
    assert [(a.identity, a.scope_name) for a in on_accounts] == [("function", "hostAccountName")]
    module, _ = bicep.main().module("roles")
    assert bicep.accessor(module["params"]["hostAccountName"]) == ["storage", "outputs", "hostAccountName"]
    assert bicep.accessor(module["params"]["dataAccountName"]) == ["storage", "outputs", "dataAccountName"]


def test_the_acr_task_runner_role_has_exactly_the_actions_of_the_acr_adapters_on_this_resource_group() -> None:
    tpl = bicep.template(bicep.BICEP / "modules" / "roles.bicep")
    definition = bicep.body(tpl.resource("acrTaskRunner"))["properties"]
    (permissions,) = definition["permissions"]
    assert set(permissions["actions"]) == ACR_TASK_RUNNER_ACTIONS
    assert permissions["dataActions"] == permissions["notActions"] == permissions["notDataActions"] == []
    assert len(definition["assignableScopes"]) == 1


def test_managed_identities_are_assigned_as_service_principals() -> None:
    for tpl in bicep.all_templates():
        for symbol, resource in tpl.resources_of("Microsoft.Authorization/roleAssignments").items():
            properties = bicep.body(resource)["properties"]
            if bicep.accessor(properties["principalId"])[0] == "uploader":
                assert "principalType" not in properties  # users or groups: Azure works it out
            else:
                assert properties["principalType"] == "ServicePrincipal", (tpl.path.name, symbol)


def test_principals_passed_to_modules_are_the_function_apps_identity() -> None:
    for symbol in ("roles", "aksAccess", "kubernetes"):
        module, _ = bicep.main().module(symbol)
        assert bicep.accessor(module["params"]["functionPrincipalId"]) == ["functionapp", "outputs", "principalId"]
    _, functionapp = bicep.main().module("functionapp")
    assert bicep.accessor(functionapp.section("outputs")["principalId"]["value"]) == [
        "site", "identity", "principalId"]
    module, _ = bicep.main().module("roles")
    assert bicep.accessor(module["params"]["kubeletObjectId"]) == ["aksAccess", "outputs", "kubeletObjectId"]


def test_the_cluster_gets_every_targets_namespace_and_a_role_on_the_named_objects_only() -> None:
    module, kubernetes = bicep.main().module("kubernetes")
    settings = bicep.shipbot_settings()
    # The targets: the settings' application's two environments, as its settings name them, then the fleet's.
    assert module["params"]["targets"] == "clusterTargets"
    assert bicep.text(bicep.main().section("variables")["clusterTargets"]["value"]) == (
        "concat([{namespace: stagingNamespace, deployment: deploymentName, service: serviceName}, "
        "{namespace: productionNamespace, deployment: deploymentName, service: serviceName}], "
        "flatten(map(fleetApps, app => app.targets)))")
    assert settings["SHIPBOT_STAGING_NAMESPACE"] == "stagingNamespace"
    assert settings["SHIPBOT_PRODUCTION_NAMESPACE"] == "productionNamespace"
    assert settings["SHIPBOT_K8S_DEPLOYMENT"] == "deploymentName"
    # The Role names the Service exactly as the deployer's proxy URL does: one parameter feeds both.
    assert settings["SHIPBOT_K8S_SERVICE"] == "serviceProxyName"
    assert bicep.main().section("variables")["serviceProxyName"]["value"] == "${serviceName}:${serviceProxyPort}"
    assert module["params"]["serviceProxyPort"] == "serviceProxyPort"
    assert bicep.accessor(module["params"]["functionPrincipalId"]) == ["functionapp", "outputs", "principalId"]
    variables = kubernetes.section("variables")
    assert bicep.text(variables["namespaces"]["value"]) == "union(map(targets, target => target.namespace), [])"
    namespace = bicep.body(variables["namespaceObjects"]["value"])
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", "ns")
    role = bicep.body(variables["roles"]["value"])
    assert (role["kind"], role["metadata"]["namespace"]) == ("Role", "ns")
    assert [{**rule, "resourceNames": bicep.text(rule["resourceNames"])} for rule in role["rules"]] == EXPECTED_K8S_RULES
    binding = bicep.body(variables["roleBindings"]["value"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "functionPrincipalId"}]
    for loop in ("namespaceObjects", "roles", "roleBindings"):
        assert variables[loop]["value"]["loop_type"]["detail"]["array_name"] == "namespaces", loop
    for loop in ("deployments", "services"):  # one of each per target, named as the target says
        assert variables[loop]["value"]["loop_type"]["detail"] == {"item_name": "target", "array_name": "targets"}
    deployment, service = (bicep.body(variables[name]["value"]) for name in ("deployments", "services"))
    assert bicep.text(deployment["metadata"]["name"]) == "target.deployment"
    assert bicep.text(deployment["metadata"]["namespace"]) == bicep.text(service["metadata"]["namespace"]) == \
        "target.namespace"
    assert bicep.text(service["metadata"]["name"]) == "target.service"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"] == \
        deployment["spec"]["template"]["metadata"]["labels"]
    access = kubernetes.section("outputs")["access"]["value"]["items"]["function"]["parameters"]
    assert list(access.values()) == ["namespaceObjects", "roles", "roleBindings"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "containerName"
    assert module["params"]["containerName"] == settings["SHIPBOT_K8S_CONTAINER"]