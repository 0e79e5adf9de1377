"""The structure of infra/bicep, checked without a Bicep compiler (none installs here: the CLI is a .NET
binary fetched from GitHub). pycep-parser (PyPI, Lark grammar of Bicep) parses the files; these tests read
what it returns.

What is checked: every file parses; every parameter is used; every module gets only parameters it declares
and every one it requires; every `<module>.outputs.<name>` exists; API versions are GA; every app setting the
code reads (shared/settings.py, the binding expressions and connections of functions/) is set, from the
resource the code expects, with the code's default; the containers, queues, secrets, namespaces and Event
Grid subscriptions the code relies on exist; and every role assignment of every identity is in the table
below, on the scope named there, with no assignment outside it.

What is not: types, property names and values against the resource providers' schemas, expressions'
evaluation, and everything ARM does at deployment. docs/deploy-azure.md says so too.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser
from pycep.models import BicepElement

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "bicep"
MAIN = BICEP / "main.bicep"

# Settings the code reads that have no meaning in Azure: the local stack's.
LOCAL_ONLY = {
    "SHIPBOT_STATE": "the local stack's state directory (build logs, keys, daemons' data)",
    "SHIPBOT_ENVIRONMENT_PREFIX": "names the local environments' Docker containers",
    "SHIPBOT_STAGING_PORT": "host port of the local staging container",
    "SHIPBOT_PRODUCTION_PORT": "host port of the local production container",
}

# App settings Bicep sets for the cloud adapters that shared/settings.py does not read yet. When the wiring
# reads one, it leaves this table (test_pending_settings_are_not_read_yet); when the wiring names one
# differently, rename it in main.bicep.
PENDING_WIRING = {
    "SHIPBOT_REGISTRY_RESOURCE_ID": "AcrTasksBuilder, AcrTaskSmokeRunner, AcrRegistry.promote: the registry's ARM id",
    "SHIPBOT_AKS_RESOURCE_ID": "KubernetesDeployer: listClusterUserCredential on this cluster",
    "SHIPBOT_STAGING_NAMESPACE": "KubernetesDeployer: staging's namespace",
    "SHIPBOT_PRODUCTION_NAMESPACE": "KubernetesDeployer: production's namespace",
    "SHIPBOT_K8S_DEPLOYMENT": "KubernetesDeployer: the Deployment it patches",
    "SHIPBOT_K8S_CONTAINER": "KubernetesDeployer: the container whose image it sets",
    "SHIPBOT_K8S_SERVICE": "KubernetesDeployer: <service>:<port> for the /version check through the proxy",
}

BUILTIN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "577a9874-89fd-4f24-9dbd-b5034d0ad23a": "Container Registry Data Importer and Data Reader",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "4abbcc35-e782-43d8-92c5-2d3f1bd2253f": "Azure Kubernetes Service Cluster User Role",
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
}

ACR_TASK_RUNNER_ACTIONS = {
    "Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action",
    "Microsoft.ContainerRegistry/registries/scheduleRun/action",
    "Microsoft.ContainerRegistry/registries/runs/read",
    "Microsoft.ContainerRegistry/registries/runs/listLogSasUrl/action",
    "Microsoft.ContainerRegistry/registries/runs/cancel/action",
}

# The Kubernetes RBAC rules of kubernetes.bicep's Role: what KubernetesDeployer calls, on its objects only.
EXPECTED_K8S_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["deploymentName"],
     "verbs": ["get", "patch", "watch"]},
    {"apiGroups": [""], "resources": ["services/proxy"],
     "resourceNames": ["serviceName", "${serviceName}:${servicePort}", "http:${serviceName}:${servicePort}"],
     "verbs": ["get"]},
]


# -- reading the templates ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    path: Path
    doc: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        return self.doc.get(name) or {}

    @property
    def params(self) -> dict[str, Any]:
        return self.section("parameters")

    def resource(self, symbol: str) -> dict[str, Any]:
        return self.section("resources")[symbol]

    def resources_of(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {s: r for s, r in self.section("resources").items() if r["type"] == rtype}

    def module(self, symbol: str) -> tuple[dict[str, Any], Template]:
        module = self.section("modules")[symbol]
        return body(module), template(self.path.parent / module["detail"]["path"])


@functools.cache
def parser() -> BicepParser:
    return BicepParser()


@functools.cache
def template(path: Path) -> Template:
    return Template(path.resolve(), parser().parse(file_path=path))


def all_templates() -> list[Template]:
    return [template(p) for p in sorted(BICEP.rglob("*.bicep"))]


def body(element: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's properties, past its `if (...)` condition or `for` loop."""
    config = element.get("config", element)
    while isinstance(config, dict) and ("condition" in config or "loop_type" in config) and "config" in config:
        config = config["config"]
    return config


_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_TOKEN = re.compile(r"(?<![\w.'])([A-Za-z_]\w*)\b(?!\s*\()")  # a name, not a member or a function


def refs(value: Any) -> Iterator[str]:
    """Every symbol (parameter, variable, resource, module, loop item) an expression refers to."""
    if isinstance(value, BicepElement):
        yield str(value)
    elif isinstance(value, str):
        for inner in _INTERPOLATION.findall(value):
            yield from (m for m in _TOKEN.findall(re.sub(r"'[^']*'", "''", inner)))
    elif isinstance(value, dict):
        operator = value.get("operator")
        if isinstance(operator, dict) and operator.get("type") == "property_accessor":
            yield from refs(operator["operands"]["operand_1"])
            yield from _member_refs(operator["operands"]["operand_2"])
            return
        for key, item in value.items():
            if key == "detail" and isinstance(item, dict) and "array_name" in item:
                yield str(item["array_name"])
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def _member_refs(value: Any) -> Iterator[str]:
    """The right of a `.`: member names are not symbols, but an index inside may be."""
    if isinstance(value, BicepElement):
        return
    operator = value.get("operator") if isinstance(value, dict) else None
    if isinstance(operator, dict) and operator.get("type") in ("property_accessor", "index_accessor"):
        yield from _member_refs(operator["operands"]["operand_1"])
        if operator["type"] == "property_accessor":
            yield from _member_refs(operator["operands"]["operand_2"])
        else:
            yield from refs(operator["operands"]["operand_2"])
    else:
        yield from refs(value)


def accessor(value: Any) -> list[str]:
    """`a.b.c` -> ["a", "b", "c"]; [] for anything else."""
    if isinstance(value, BicepElement):
        return [str(value)]
    operator = value.get("operator") if isinstance(value, dict) else None
    if isinstance(operator, dict) and operator.get("type") == "property_accessor":
        left, right = accessor(operator["operands"]["operand_1"]), accessor(operator["operands"]["operand_2"])
        return left + right if left and right else []
    return []


def resolve_object(tpl: Template, value: Any, caller: tuple[Template, dict[str, Any]] | None) -> dict[str, Any]:
    """An object expression -> its keys and values: literals, variables, union(), and parameters whose value
    the calling module passes (`caller`: the calling template and the module's properties)."""
    if isinstance(value, dict) and "function" in value and value["function"]["type"] == "union":
        merged: dict[str, Any] = {}
        for arg in value["function"]["parameters"].values():
            merged.update(resolve_object(tpl, arg, caller))
        return merged
    if isinstance(value, BicepElement):
        if value in tpl.section("variables"):
            return resolve_object(tpl, tpl.section("variables")[value]["value"], caller)
        if value in tpl.params and caller is not None:
            outer, module = caller
            return resolve_object(outer, module["params"][value], None)
        raise AssertionError(f"{tpl.path.name}: cannot resolve {value!r} to an object")
    assert isinstance(value, dict), f"{tpl.path.name}: not an object: {value!r}"
    return value


# -- what the code reads ------------------------------------------------------------------------------------
def settings_read_by_code() -> set[str]:
    source = (ROOT / "shared" / "settings.py").read_text()
    return {f"SHIPBOT_{name}" for name in re.findall(r"\b(?:get|number)\(\"([A-Z0-9_]+)\"", source)}


def functions_source() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "functions").glob("*.py")))


def binding_settings() -> set[str]:
    """Settings named by binding expressions (%NAME%) in functions/."""
    return set(re.findall(r"%([A-Z][A-Z0-9_]*)%", functions_source()))


def binding_connections() -> set[str]:
    return set(re.findall(r"\bconnection=\"([A-Za-z0-9_]+)\"", functions_source()))


def event_grid_functions() -> set[str]:
    names = set()
    for path in (ROOT / "functions").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            calls = [d for d in node.decorator_list if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)]
            if any(c.func.attr == "event_grid_trigger" for c in calls):
                names |= {c.args[0].value for c in calls if c.func.attr == "function_name"}
    return names


# -- what the templates set ---------------------------------------------------------------------------------
def main() -> Template:
    return template(MAIN)


def app_settings() -> dict[str, Any]:
    """The Function App's app settings, keyed by name, values as main.bicep or appsettings.bicep writes them."""
    module, appsettings = main().module("appsettings")
    (resource,) = appsettings.resources_of("Microsoft.Web/sites/config").values()
    assert body(resource)["name"] == "appsettings"
    return resolve_object(appsettings, body(resource)["properties"], (main(), module))


def shipbot_settings() -> dict[str, Any]:
    return {k: v for k, v in app_settings().items() if k.startswith("SHIPBOT_")}


def param_default(tpl: Template, name: str) -> Any:
    return tpl.params[name].get("default")


def setting_param(name: str) -> str:
    """The main.bicep parameter an app setting is set from: `param` or `string(param)`."""
    value = shipbot_settings()[name]
    if isinstance(value, dict) and value.get("function", {}).get("type") == "string":
        value = value["function"]["parameters"]["value_to_convert"]
    assert isinstance(value, BicepElement) and value in main().params, f"{name} is not set from a parameter"
    return str(value)


def module_output(value: Any) -> tuple[Template, str, Any]:
    """`<module>.outputs.<name>` in main.bicep -> (the module's template, the name, the output's value)."""
    path = accessor(value)
    assert len(path) == 3 and path[1] == "outputs", f"not a module output: {value!r}"
    _, tpl = main().module(path[0])
    return tpl, path[2], tpl.section("outputs")[path[2]]["value"]


# -- the tests: well-formed ---------------------------------------------------------------------------------
def test_the_templates_are_there_and_parse() -> None:
    names = {p.relative_to(BICEP).as_posix() for p in BICEP.rglob("*.bicep")}
    assert {"main.bicep", "modules/storage.bicep", "modules/functionapp.bicep", "modules/eventgrid.bicep",
            "modules/acr.bicep", "modules/aks.bicep", "modules/keyvault.bicep", "modules/monitoring.bicep",
            "modules/roles.bicep"} <= names
    for tpl in all_templates():
        assert tpl.doc["globals"]["scope"]["value"] == "resourceGroup", tpl.path.name


@pytest.mark.parametrize("path", sorted(BICEP.rglob("*.bicep")), ids=lambda p: p.name)
def test_every_parameter_is_used(path: Path) -> None:
    tpl = template(path)
    used = set()
    for section in ("variables", "resources", "modules", "outputs"):
        used |= set(refs(tpl.section(section)))
    for name, param in tpl.params.items():
        used |= set(refs(param.get("default"))) - {name}
    assert set(tpl.params) - used == set()


@pytest.mark.parametrize("path", sorted(BICEP.rglob("*.bicep")), ids=lambda p: p.name)
def test_every_symbol_referred_to_is_declared(path: Path) -> None:
    tpl = template(path)
    declared = {*tpl.params, *tpl.section("variables"), *tpl.section("resources"), *tpl.section("modules")}
    loop_items = {m for m in re.findall(r"\[for (\w+) in ", path.read_text())}
    builtins = {"true", "false", "null"}
    used = set()
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        used |= set(refs(tpl.section(section)))
    assert used - declared - loop_items - builtins == set()


@pytest.mark.parametrize("path", sorted(BICEP.rglob("*.bicep")), ids=lambda p: p.name)
def test_modules_get_the_parameters_they_declare_and_require(path: Path) -> None:
    tpl = template(path)
    for symbol in tpl.section("modules"):
        module, target = tpl.module(symbol)
        passed = set(module.get("params", {}))
        assert passed <= set(target.params), f"{symbol}: {passed - set(target.params)} not declared"
        required = {n for n, p in target.params.items() if p.get("default") is None and not n.endswith("?")}
        assert required <= passed, f"{symbol}: {required - passed} not passed"


def test_module_outputs_that_are_read_exist() -> None:
    for tpl in all_templates():
        for value in _walk(tpl.doc):
            path = accessor(value)
            if len(path) >= 3 and path[1] == "outputs" and path[0] in tpl.section("modules"):
                _, target = tpl.module(path[0])
                assert path[2] in target.section("outputs"), f"{tpl.path.name}: {'.'.join(path)}"


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def test_resources_use_ga_api_versions() -> None:
    for tpl in all_templates():
        for symbol, resource in tpl.section("resources").items():
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", resource["api_version"]), (tpl.path.name, symbol)


def test_the_parameters_file_names_only_parameters_of_main_and_no_secret() -> None:
    values = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    assert set(values) <= set(main().params)
    secure = {n for n, p in main().params.items() if any(d["type"] == "secure" for d in p["decorators"])}
    assert secure == {"githubWebhookSecret", "azureDevOpsWebhookSecret", "notifyUrl"}
    assert not secure & set(values), "secrets go on the command line (docs/deploy-azure.md), never in a file"
    required = {n for n, p in main().params.items() if p.get("default") is None}
    assert required - secure <= set(values)


# -- the tests: app settings --------------------------------------------------------------------------------
def test_every_setting_the_code_reads_is_set_except_the_local_ones() -> None:
    read = settings_read_by_code() | {s for s in binding_settings() if s.startswith("SHIPBOT_")}
    assert {"SHIPBOT_TARGET", "SHIPBOT_STORAGE", "SHIPBOT_JOBS_QUEUE"} <= read  # the scan found them
    assert set(LOCAL_ONLY) <= read, "a local-only setting is no longer read: drop it from LOCAL_ONLY"
    set_ = set(shipbot_settings())
    assert read - set(LOCAL_ONLY) - set_ == set()
    assert set_ & set(LOCAL_ONLY) == set()


def test_every_shipbot_setting_is_read_by_the_code_or_waits_for_the_wiring() -> None:
    read = settings_read_by_code() | binding_settings()
    assert set(shipbot_settings()) - read - set(PENDING_WIRING) == set()


def test_pending_settings_are_not_read_yet() -> None:
    """Once the wiring reads a pending setting, its row leaves PENDING_WIRING and the checks above cover it."""
    assert set(PENDING_WIRING) & settings_read_by_code() == set()
    assert set(PENDING_WIRING) <= set(shipbot_settings())


def test_azure_is_the_target_and_the_defaults_are_the_codes() -> None:
    settings = shipbot_settings()
    assert settings["SHIPBOT_TARGET"] == "azure"
    code = Settings()
    for name in ("MODELS_CONTAINER", "LEDGER_CONTAINER", "RELEASE_BRANCH", "REPOSITORY", "BASE_IMAGE",
                 "MAX_BUILD_ATTEMPTS", "SMOKE_SECONDS", "VERIFY_SECONDS", "STUCK_MINUTES"):
        default = param_default(main(), setting_param(f"SHIPBOT_{name}"))
        assert str(default) == str(getattr(code, name.lower())).removesuffix(".0"), name
    local = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    for name in ("SHIPBOT_JOBS_QUEUE", "SHIPBOT_PROMOTION_SCHEDULE", "SHIPBOT_RECONCILE_SCHEDULE"):
        assert param_default(main(), setting_param(name)) == local[name], name


def test_secrets_are_key_vault_references_to_versionless_secret_uris() -> None:
    settings = shipbot_settings()
    _, keyvault = main().module("keyvault")
    for name in ("SHIPBOT_GITHUB_SECRET", "SHIPBOT_AZURE_DEVOPS_SECRET", "SHIPBOT_NOTIFY_URL"):
        value = settings[name]
        if name == "SHIPBOT_NOTIFY_URL":  # empty(notifyUrl) ? '' : '@Microsoft.KeyVault(...)'
            operator = value["operator"]
            assert operator["type"] == "conditional", name
            value = operator["operands"]["false_value"]
        match = re.fullmatch(r"@Microsoft\.KeyVault\(SecretUri=\$\{keyvault\.outputs\.(\w+)\}\)", value)
        assert match, f"{name} is not a Key Vault reference: {value!r}"
        output = keyvault.section("outputs")[match[1]]["value"]
        if isinstance(output, dict) and output.get("operator", {}).get("type") == "conditional":
            output = output["operator"]["operands"]["false_value"]
        secret, *path = accessor(output)
        assert path == ["properties", "secretUri"], f"{name}: {output!r}"
        assert keyvault.resource(secret)["type"] == "Microsoft.KeyVault/vaults/secrets"
    assert not any("AccountKey=" in str(v) or "SharedAccessSignature=" in str(v) for v in app_settings().values())


def test_the_webhook_secrets_always_exist_so_no_reference_stays_unresolved() -> None:
    """App Service keeps an unresolvable reference as its literal text: that must never become the secret."""
    _, keyvault = main().module("keyvault")
    for symbol in ("githubSecret", "azureDevOpsSecret"):
        assert "condition" not in keyvault.resource(symbol)["config"], symbol
    assert keyvault.resource("notifySecret")["config"]["condition"] is not None
    vault = body(keyvault.resource("vault"))["properties"]
    assert vault["enableRbacAuthorization"] is True


def test_host_storage_and_telemetry_use_the_identity() -> None:
    settings = app_settings()
    assert "AzureWebJobsStorage" not in settings
    _, storage = main().module("storage")
    module, _ = main().module("appsettings")
    assert accessor(module["params"]["hostAccountName"]) == ["storage", "outputs", "hostAccountName"]
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(settings), "Flex refuses them"
    _, monitoring = main().module("monitoring")
    assert body(monitoring.resource("appInsights"))["properties"]["DisableLocalAuth"] is True
    for account in ("data", "host"):
        assert body(storage.resource(account))["properties"] == "accountProperties"
    assert storage.section("variables")["accountProperties"]["value"]["allowSharedKeyAccess"] is False


def test_binding_connections_are_identity_based_and_reachable() -> None:
    """The host reads "AzureWebJobs<connection>" before "<connection>", and takes a section with a value as a
    connection string. SHIPBOT_STORAGE has a value (the blob URL settings.py reads), so its queue settings
    must sit under the AzureWebJobs prefix to be read at all."""
    settings = app_settings()
    connections = binding_connections()
    assert connections == {"SHIPBOT_STORAGE"}
    for name in connections:
        prefixed, plain = f"AzureWebJobs{name}__queueServiceUri", f"{name}__queueServiceUri"
        if name in settings:
            assert prefixed in settings and plain not in settings, name
        else:
            assert prefixed in settings or plain in settings, name
    module, _ = main().module("appsettings")
    assert accessor(module["params"]["queueEndpoint"]) == ["storage", "outputs", "queueEndpoint"]


# -- the tests: what the code talks to exists ---------------------------------------------------------------
def _storage_symbol(storage: Template, rtype: str, param: str) -> str:
    found = [s for s, r in storage.resources_of(rtype).items() if body(r)["name"] == param]
    assert len(found) == 1, f"no {rtype} named by {param}"
    return found[0]


def test_the_containers_and_queues_of_the_settings_exist_in_the_account_of_shipbot_storage() -> None:
    module, storage = main().module("storage")
    settings = shipbot_settings()
    containers = "Microsoft.Storage/storageAccounts/blobServices/containers"
    for setting, param in (("SHIPBOT_MODELS_CONTAINER", "modelsContainerName"),
                           ("SHIPBOT_LEDGER_CONTAINER", "ledgerContainerName")):
        assert module["params"][param] == settings[setting], setting
        symbol = _storage_symbol(storage, containers, param)
        assert body(storage.resource(body(storage.resource(symbol))["parent"]))["parent"] == "data"
    assert module["params"]["jobsQueueName"] == settings["SHIPBOT_JOBS_QUEUE"]
    queues = "Microsoft.Storage/storageAccounts/queueServices/queues"
    _storage_symbol(storage, queues, "jobsQueueName")
    _storage_symbol(storage, queues, "${jobsQueueName}-poison")
    _storage_symbol(storage, containers, "deadLetterContainerName")
    tpl, _, blob_endpoint = module_output(settings["SHIPBOT_STORAGE"])
    assert tpl is storage and accessor(blob_endpoint) == ["data", "properties", "primaryEndpoints", "blob"]


def test_the_registry_is_standard_and_shipbot_registry_is_its_login_server() -> None:
    acr, _, value = module_output(shipbot_settings()["SHIPBOT_REGISTRY"])
    registry, *path = accessor(value)
    assert path == ["properties", "loginServer"]
    resource = body(acr.resource(registry))
    assert acr.resource(registry)["type"] == "Microsoft.ContainerRegistry/registries"
    assert resource["sku"]["name"] == "Standard"
    assert resource["properties"]["adminUserEnabled"] is False


def test_the_function_app_is_flex_consumption_python_311_with_its_own_identity() -> None:
    _, functionapp = main().module("functionapp")
    plan = body(functionapp.resource("plan"))
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = body(functionapp.resource("site"))
    assert site["kind"] == "functionapp,linux" and site["identity"]["type"] == "SystemAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "SystemAssignedIdentity"
    assert site["properties"]["httpsOnly"] is True


def test_every_event_grid_trigger_is_subscribed_with_retries_and_dead_letters() -> None:
    module, eventgrid = main().module("eventgrid")
    subscriptions = eventgrid.resources_of("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    targets = {}
    for symbol, resource in subscriptions.items():
        properties = body(resource)["properties"]
        destination = properties["destination"]
        assert destination["endpointType"] == "AzureFunction"
        match = re.fullmatch(r"\$\{functionAppId\}/functions/(\w+)", destination["properties"]["resourceId"])
        assert match, symbol
        targets[match[1]] = properties
        assert properties["eventDeliverySchema"] == "EventGridSchema"
        assert properties["retryPolicy"] == "retryPolicy"
        dead_letter = properties["deadLetterWithResourceIdentity"]
        assert dead_letter["identity"]["type"] == "SystemAssigned"
        assert dead_letter["deadLetterDestination"] == "deadLetterDestination"
    assert set(targets) == event_grid_functions() == {"model_uploaded", "image_pushed"}
    variables = eventgrid.section("variables")
    assert set(variables["retryPolicy"]["value"]) == {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"}
    assert variables["deadLetterDestination"]["value"]["properties"]["blobContainerName"] == "deadLetterContainerName"
    assert module["params"]["deadLetterContainerName"] == main().module("storage")[0]["params"]["deadLetterContainerName"]
    blobs = targets["model_uploaded"]["filter"]
    assert blobs["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert blobs["subjectBeginsWith"] == "/blobServices/default/containers/${modelsContainerName}/blobs/"
    assert module["params"]["modelsContainerName"] == shipbot_settings()["SHIPBOT_MODELS_CONTAINER"]
    images = targets["image_pushed"]["filter"]
    assert images["includedEventTypes"] == ["Microsoft.ContainerRegistry.ImagePushed"]
    assert images["advancedFilters"][0]["key"] == "data.target.repository"
    repositories = module["params"]["repositories"]["function"]["parameters"]
    assert repositories == {"arg_1": ["repository"], "arg_2": "allowedRepositories"}


def test_the_cluster_gets_both_namespaces_and_a_role_on_the_named_objects_only() -> None:
    module, kubernetes = main().module("kubernetes")
    settings = shipbot_settings()
    assert module["params"]["stagingNamespace"] == settings["SHIPBOT_STAGING_NAMESPACE"]
    assert module["params"]["productionNamespace"] == settings["SHIPBOT_PRODUCTION_NAMESPACE"]
    assert module["params"]["deploymentName"] == settings["SHIPBOT_K8S_DEPLOYMENT"]
    assert accessor(module["params"]["functionPrincipalId"]) == ["functionapp", "outputs", "principalId"]
    variables = kubernetes.section("variables")
    assert variables["namespaces"]["value"] == ["stagingNamespace", "productionNamespace"]
    namespace = body(variables["namespaceObjects"]["value"])
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", "ns")
    role = body(variables["roles"]["value"])
    assert (role["kind"], role["metadata"]["namespace"]) == ("Role", "ns")
    assert role["rules"] == EXPECTED_K8S_RULES
    binding = body(variables["roleBindings"]["value"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "functionPrincipalId"}]
    for loop in ("namespaceObjects", "roles", "roleBindings", "deployments", "services"):
        assert variables[loop]["value"]["loop_type"]["detail"]["array_name"] == "namespaces", loop
    access = kubernetes.section("outputs")["access"]["value"]["items"]["function"]["parameters"]
    assert list(access.values()) == ["namespaceObjects", "roles", "roleBindings"]
    container = body(variables["deployments"]["value"])["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "containerName"
    assert module["params"]["containerName"] == settings["SHIPBOT_K8S_CONTAINER"]


# -- the tests: identities and their roles ------------------------------------------------------------------
@dataclass(frozen=True)
class Assignment:
    file: str
    symbol: str
    identity: str
    role: str
    scope_type: str
    scope_name: str


IDENTITIES = {"functionPrincipalId": "function", "kubeletObjectId": "aks kubelet", "uploader": "model uploaders",
              "storageTopic": "storage topic", "registryTopic": "registry topic"}


def role_assignments() -> list[Assignment]:
    found = []
    for tpl in all_templates():
        for symbol, resource in tpl.resources_of("Microsoft.Authorization/roleAssignments").items():
            properties = body(resource)["properties"]
            principal = accessor(properties["principalId"])
            assert principal and principal[0] in IDENTITIES, f"{tpl.path.name} {symbol}: unknown principal"
            scope = body(resource).get("scope")
            assert isinstance(scope, BicepElement), f"{tpl.path.name} {symbol}: no resource scope"
            target = tpl.resource(scope)
            found.append(Assignment(tpl.path.name, symbol, IDENTITIES[principal[0]], _role_name(tpl, properties),
                                    target["type"].rsplit("/", 1)[-1], str(body(target)["name"])))
    return found


def _role_name(tpl: Template, properties: dict[str, Any]) -> str:
    definition = properties["roleDefinitionId"]
    if isinstance(definition, dict) and "function" in definition:
        parameters = definition["function"]["parameters"]
        assert parameters["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        return BUILTIN_ROLES[parameters["resource_name_1"]]
    symbol, *path = accessor(definition)
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
    module, _ = main().module("roles")
    assert accessor(module["params"]["hostAccountName"]) == ["storage", "outputs", "hostAccountName"]
    assert accessor(module["params"]["dataAccountName"]) == ["storage", "outputs", "dataAccountName"]


def test_the_acr_task_runner_role_has_exactly_the_actions_of_the_acr_adapters_on_this_resource_group() -> None:
    tpl = template(BICEP / "modules" / "roles.bicep")
    definition = body(tpl.resource("acrTaskRunner"))["properties"]
    (permissions,) = definition["permissions"]
    assert set(permissions["actions"]) == ACR_TASK_RUNNER_ACTIONS
    assert permissions["dataActions"] == permissions["notActions"] == permissions["notDataActions"] == []
    assert len(definition["assignableScopes"]) == 1


def test_managed_identities_are_assigned_as_service_principals() -> None:
    for tpl in all_templates():
        for symbol, resource in tpl.resources_of("Microsoft.Authorization/roleAssignments").items():
            properties = body(resource)["properties"]
            if accessor(properties["principalId"])[0] == "uploader":
                assert "principalType" not in properties  # users or groups: Azure works it out
            else:
                assert properties["principalType"] == "ServicePrincipal", (tpl.path.name, symbol)


def test_principals_passed_to_modules_are_the_function_apps_identity() -> None:
    for symbol in ("roles", "aksAccess", "kubernetes"):
        module, _ = main().module(symbol)
        assert accessor(module["params"]["functionPrincipalId"]) == ["functionapp", "outputs", "principalId"]
    _, functionapp = main().module("functionapp")
    assert accessor(functionapp.section("outputs")["principalId"]["value"]) == [
        "site", "identity", "principalId"]
    module, _ = main().module("roles")
    assert accessor(module["params"]["kubeletObjectId"]) == ["aksAccess", "outputs", "kubeletObjectId"]


# -- the package the docs publish ---------------------------------------------------------------------------
def test_funcignore_keeps_everything_the_function_app_imports() -> None:
    """`func azure functionapp publish` leaves out what .funcignore names; the app must still import."""
    ignored = {line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    imported = set()
    for path in [ROOT / "function_app.py", *(ROOT / "functions").glob("*.py"), *(ROOT / "shared").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
    local_packages = {name for name in imported if (ROOT / name / "__init__.py").exists() or (ROOT / name).is_dir()}
    assert {"functions", "shared", "model_api"} <= local_packages
    assert not local_packages & ignored
    assert not {"function_app.py", "host.json", "requirements.txt"} & ignored
    assert {".venv", "tests", "local.settings.json"} <= ignored
