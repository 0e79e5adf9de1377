"""The structure of infra/bicep, checked without a Bicep compiler (tests/bicep_reader.py says why and how):
every file parses; every parameter is used and every symbol declared; every module gets only the parameters it
declares and all it requires; every `<module>.outputs.<name>` read exists; API versions are GA; every app
setting the code reads (shared/settings.py, the binding expressions and connections of functions/) is set,
from the resource the code expects, with the code's default; the containers, queues, registry, secrets,
namespaces and Event Grid subscriptions the code relies on exist. Roles: test_bicep_roles.py.

Not checked: types, property names and values against the resource providers' schemas, the evaluation of
expressions, and everything ARM does at deployment (docs/deploy-azure.md, "What was verified").
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from shared.settings import Settings
from tests import bicep_reader as bicep

# Settings the code reads that have no meaning in Azure: the local stack's.
LOCAL_ONLY = {
    "SHIPBOT_STATE": "the local stack's state directory (build logs, keys, daemons' data)",
    "SHIPBOT_ENVIRONMENT_PREFIX": "names the local environments' Docker containers",
    "SHIPBOT_STAGING_PORT": "host port of the local staging container",
    "SHIPBOT_PRODUCTION_PORT": "host port of the local production container",
}

# Settings the code reads that the Azure deployment leaves unset on purpose: overrides for other setups.
NOT_SET_IN_AZURE = {
    "SHIPBOT_STORAGE_TARGET": "per-port override of SHIPBOT_TARGET; in Azure every port is azure",
    "SHIPBOT_BUILDER_TARGET": "per-port override of SHIPBOT_TARGET",
    "SHIPBOT_REGISTRY_TARGET": "per-port override of SHIPBOT_TARGET",
    "SHIPBOT_SMOKE_TARGET": "per-port override of SHIPBOT_TARGET",
    "SHIPBOT_DEPLOYER_TARGET": "per-port override of SHIPBOT_TARGET",
    "SHIPBOT_KUBECONFIG": "a cluster other than AKS; infra's cluster is AKS (SHIPBOT_AKS_RESOURCE_ID)",
    "SHIPBOT_KUBE_CONTEXT": "the kubeconfig's context",
    "SHIPBOT_MANAGED_IDENTITY_CLIENT_ID": "a user-assigned identity; infra gives the app a system-assigned one",
    "SHIPBOT_ARM_ENDPOINT": "a sovereign cloud's Resource Manager; infra deploys to the public cloud",
    "SHIPBOT_MODEL_STAGE": "MLflow's older stages; infra offers the alias (modelAlias)",
    "SHIPBOT_MLFLOW_WORKSPACE": "the workspace whose events count; derived from SHIPBOT_MLFLOW_URI",
    "SHIPBOT_LEASE_SECONDS": "the ledger's lease length; the code's default (60 s) suits Azure",
}


# -- the tests: well-formed ---------------------------------------------------------------------------------
def test_the_templates_are_there_and_parse() -> None:
    names = {p.relative_to(bicep.BICEP).as_posix() for p in bicep.BICEP.rglob("*.bicep")}
    assert {"main.bicep", "modules/storage.bicep", "modules/functionapp.bicep", "modules/eventgrid.bicep",
            "modules/acr.bicep", "modules/aks.bicep", "modules/keyvault.bicep", "modules/monitoring.bicep",
            "modules/roles.bicep"} <= names
    for tpl in bicep.all_templates():
        assert tpl.doc["globals"]["scope"]["value"] == "resourceGroup", tpl.path.name


@pytest.mark.parametrize("path", sorted(bicep.BICEP.rglob("*.bicep")), ids=lambda p: p.name)
def test_every_parameter_is_used(path: Path) -> None:
    tpl = bicep.template(path)
    used = set()
    for section in ("variables", "resources", "modules", "outputs"):
        used |= set(bicep.refs(tpl.section(section)))
    for name, param in tpl.params.items():
        used |= set(bicep.refs(param.get("default"))) - {name}
    assert set(tpl.params) - used == set()


@pytest.mark.parametrize("path", sorted(bicep.BICEP.rglob("*.bicep")), ids=lambda p: p.name)
def test_every_symbol_referred_to_is_declared(path: Path) -> None:
    tpl = bicep.template(path)
    declared = {*tpl.params, *tpl.section("variables"), *tpl.section("resources"), *tpl.section("modules")}
    loop_items = {m for m in re.findall(r"\[for (\w+) in ", path.read_text())}
    builtins = {"true", "false", "null"}
    used = set()
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        used |= set(bicep.refs(tpl.section(section)))
    assert used - declared - loop_items - builtins == set()


@pytest.mark.parametrize("path", sorted(bicep.BICEP.rglob("*.bicep")), ids=lambda p: p.name)
def test_modules_get_the_parameters_they_declare_and_require(path: Path) -> None:
    tpl = bicep.template(path)
    for symbol in tpl.section("modules"):
        module, target = tpl.module(symbol)
        passed = set(module.get("params", {}))
        assert passed <= set(target.params), f"{symbol}: {passed - set(target.params)} not declared"
        required = {n for n, p in target.params.items() if p.get("default") is None and not n.endswith("?")}
        assert required <= passed, f"{symbol}: {required - passed} not passed"


def test_module_outputs_that_are_read_exist() -> None:
    for tpl in bicep.all_templates():
        for value in bicep.walk(tpl.doc):
            path = bicep.accessor(value)
            if len(path) >= 3 and path[1] == "outputs" and path[0] in tpl.section("modules"):
                _, target = tpl.module(path[0])
                assert path[2] in target.section("outputs"), f"{tpl.path.name}: {'.'.join(path)}"




def test_resources_use_ga_api_versions() -> None:
    for tpl in bicep.all_templates():
        for symbol, resource in tpl.section("resources").items():
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", resource["api_version"]), (tpl.path.name, symbol)


def test_the_parameters_file_names_only_parameters_of_main_and_no_secret() -> None:
    values = json.loads((bicep.BICEP / "main.parameters.json").read_text())["parameters"]
    assert set(values) <= set(bicep.main().params)
    secure = {n for n, p in bicep.main().params.items() if any(d["type"] == "secure" for d in p["decorators"])}
    assert secure == {"githubWebhookSecret", "azureDevOpsWebhookSecret", "notifyUrl", "gitToken"}
    assert not secure & set(values), "secrets go on the command line (docs/deploy-azure.md), never in a file"
    required = {n for n, p in bicep.main().params.items() if p.get("default") is None}
    assert required - secure <= set(values)


# -- the tests: app settings --------------------------------------------------------------------------------
def test_every_setting_the_code_reads_is_set_except_the_local_ones_and_the_overrides() -> None:
    read = bicep.settings_read_by_code() | {s for s in bicep.binding_settings() if s.startswith("SHIPBOT_")}
    assert {"SHIPBOT_TARGET", "SHIPBOT_STORAGE", "SHIPBOT_JOBS_QUEUE", "SHIPBOT_AKS_RESOURCE_ID"} <= read  # found
    unset = set(LOCAL_ONLY) | set(NOT_SET_IN_AZURE)
    assert unset <= read, "a setting is no longer read: drop it from LOCAL_ONLY or NOT_SET_IN_AZURE"
    set_ = set(bicep.shipbot_settings())
    assert read - unset - set_ == set()
    assert set_ & unset == set()


def test_every_shipbot_setting_set_is_read_by_the_code() -> None:
    read = bicep.settings_read_by_code() | bicep.binding_settings()
    assert set(bicep.shipbot_settings()) - read == set()


def test_azure_is_the_target_and_the_defaults_are_the_codes() -> None:
    settings = bicep.shipbot_settings()
    assert settings["SHIPBOT_TARGET"] == "azure"
    code = Settings()
    for name in ("MODELS_CONTAINER", "LEDGER_CONTAINER", "RELEASE_BRANCH", "REPOSITORY", "BASE_IMAGE",
                 "MAX_BUILD_ATTEMPTS", "SMOKE_SECONDS", "VERIFY_SECONDS"):
        default = bicep.param_default(bicep.main(), bicep.setting_param(f"SHIPBOT_{name}"))
        assert str(default) == str(getattr(code, name.lower())).removesuffix(".0"), name
    local = json.loads((bicep.ROOT / "local.settings.json.example").read_text())["Values"]
    for name in ("SHIPBOT_JOBS_QUEUE", "SHIPBOT_PROMOTION_SCHEDULE", "SHIPBOT_RECONCILE_SCHEDULE"):
        assert bicep.param_default(bicep.main(), bicep.setting_param(name)) == local[name], name


def test_secrets_are_key_vault_references_to_versionless_secret_uris() -> None:
    settings = bicep.shipbot_settings()
    _, keyvault = bicep.main().module("keyvault")
    for name in ("SHIPBOT_GITHUB_SECRET", "SHIPBOT_AZURE_DEVOPS_SECRET", "SHIPBOT_NOTIFY_URL", "SHIPBOT_GIT_TOKEN"):
        value = settings[name]
        if name in ("SHIPBOT_NOTIFY_URL", "SHIPBOT_GIT_TOKEN"):  # empty(x) ? '' : '@Microsoft.KeyVault(...)'
            operator = value["operator"]
            assert operator["type"] == "conditional", name
            value = operator["operands"]["false_value"]
        match = re.fullmatch(r"@Microsoft\.KeyVault\(SecretUri=\$\{keyvault\.outputs\.(\w+)\}\)", value)
        assert match, f"{name} is not a Key Vault reference: {value!r}"
        output = keyvault.section("outputs")[match[1]]["value"]
        if isinstance(output, dict) and output.get("operator", {}).get("type") == "conditional":
            output = output["operator"]["operands"]["false_value"]
        secret, *path = bicep.accessor(output)
        assert path == ["properties", "secretUri"], f"{name}: {output!r}"
        assert keyvault.resource(secret)["type"] == "Microsoft.KeyVault/vaults/secrets"
    assert not any("AccountKey=" in str(v) or "SharedAccessSignature=" in str(v) for v in bicep.app_settings().values())


def test_the_webhook_secrets_always_exist_so_no_reference_stays_unresolved() -> None:
    """App Service keeps an unresolvable reference as its literal text: that must never become the secret."""
    _, keyvault = bicep.main().module("keyvault")
    for symbol in ("githubSecret", "azureDevOpsSecret"):
        assert "condition" not in keyvault.resource(symbol)["config"], symbol
    assert keyvault.resource("notifySecret")["config"]["condition"] is not None
    assert keyvault.resource("gitTokenSecret")["config"]["condition"] is not None  # its setting is '' then
    vault = bicep.body(keyvault.resource("vault"))["properties"]
    assert vault["enableRbacAuthorization"] is True


def test_host_storage_and_telemetry_use_the_identity() -> None:
    settings = bicep.app_settings()
    assert "AzureWebJobsStorage" not in settings
    _, storage = bicep.main().module("storage")
    module, _ = bicep.main().module("appsettings")
    assert bicep.accessor(module["params"]["hostAccountName"]) == ["storage", "outputs", "hostAccountName"]
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(settings), "Flex refuses them"
    _, monitoring = bicep.main().module("monitoring")
    assert bicep.body(monitoring.resource("appInsights"))["properties"]["DisableLocalAuth"] is True
    for account in ("data", "host"):
        assert bicep.body(storage.resource(account))["properties"] == "accountProperties"
    assert storage.section("variables")["accountProperties"]["value"]["allowSharedKeyAccess"] is False


def test_binding_connections_are_identity_based_and_reachable() -> None:
    """The host reads "AzureWebJobs<connection>" before "<connection>", and takes a section with a value as a
    connection string. SHIPBOT_STORAGE has a value (the blob URL settings.py reads), so its queue settings
    must sit under the AzureWebJobs prefix to be read at all."""
    settings = bicep.app_settings()
    connections = bicep.binding_connections()
    assert connections == {"SHIPBOT_STORAGE"}
    for name in connections:
        prefixed, plain = f"AzureWebJobs{name}__queueServiceUri", f"{name}__queueServiceUri"
        if name in settings:
            assert prefixed in settings and plain not in settings, name
        else:
            assert prefixed in settings or plain in settings, name
    module, _ = bicep.main().module("appsettings")
    assert bicep.accessor(module["params"]["queueEndpoint"]) == ["storage", "outputs", "queueEndpoint"]


# -- the tests: what the code talks to exists ---------------------------------------------------------------
def _storage_symbol(storage: bicep.Template, rtype: str, param: str) -> str:
    found = [s for s, r in storage.resources_of(rtype).items() if bicep.body(r)["name"] == param]
    assert len(found) == 1, f"no {rtype} named by {param}"
    return found[0]


def test_the_containers_and_queues_of_the_settings_exist_in_the_account_of_shipbot_storage() -> None:
    module, storage = bicep.main().module("storage")
    settings = bicep.shipbot_settings()
    containers = "Microsoft.Storage/storageAccounts/blobServices/containers"
    for setting, param in (("SHIPBOT_MODELS_CONTAINER", "modelsContainerName"),
                           ("SHIPBOT_LEDGER_CONTAINER", "ledgerContainerName")):
        assert module["params"][param] == settings[setting], setting
        symbol = _storage_symbol(storage, containers, param)
        assert bicep.body(storage.resource(bicep.body(storage.resource(symbol))["parent"]))["parent"] == "data"
    assert module["params"]["jobsQueueName"] == settings["SHIPBOT_JOBS_QUEUE"]
    queues = "Microsoft.Storage/storageAccounts/queueServices/queues"
    _storage_symbol(storage, queues, "jobsQueueName")
    _storage_symbol(storage, queues, "${jobsQueueName}-poison")
    _storage_symbol(storage, containers, "deadLetterContainerName")
    tpl, _, blob_endpoint = bicep.module_output(settings["SHIPBOT_STORAGE"])
    assert tpl is storage and bicep.accessor(blob_endpoint) == ["data", "properties", "primaryEndpoints", "blob"]


def test_the_registry_is_standard_and_shipbot_registry_is_its_login_server() -> None:
    acr, _, value = bicep.module_output(bicep.shipbot_settings()["SHIPBOT_REGISTRY"])
    registry, *path = bicep.accessor(value)
    assert path == ["properties", "loginServer"]
    resource = bicep.body(acr.resource(registry))
    assert acr.resource(registry)["type"] == "Microsoft.ContainerRegistry/registries"
    assert resource["sku"]["name"] == "Standard"
    assert resource["properties"]["adminUserEnabled"] is False


def test_the_function_app_is_flex_consumption_python_311_with_its_own_identity() -> None:
    _, functionapp = bicep.main().module("functionapp")
    plan = bicep.body(functionapp.resource("plan"))
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = bicep.body(functionapp.resource("site"))
    assert site["kind"] == "functionapp,linux" and site["identity"]["type"] == "SystemAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "SystemAssignedIdentity"
    assert site["properties"]["httpsOnly"] is True


def test_every_event_grid_trigger_is_subscribed_with_retries_and_dead_letters() -> None:
    module, eventgrid = bicep.main().module("eventgrid")
    subscriptions = eventgrid.resources_of("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    targets = {}
    for symbol, resource in subscriptions.items():
        properties = bicep.body(resource)["properties"]
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
    assert set(targets) == bicep.event_grid_functions() == {"model_uploaded", "model_registered", "image_pushed"}
    assert targets["model_registered"]["filter"] == {
        "includedEventTypes": ["Microsoft.MachineLearningServices.ModelRegistered"]}
    variables = eventgrid.section("variables")
    assert set(variables["retryPolicy"]["value"]) == {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"}
    assert variables["deadLetterDestination"]["value"]["properties"]["blobContainerName"] == "deadLetterContainerName"
    assert module["params"]["deadLetterContainerName"] == bicep.main().module("storage")[0]["params"]["deadLetterContainerName"]
    blobs = targets["model_uploaded"]["filter"]
    assert blobs["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert blobs["subjectBeginsWith"] == "/blobServices/default/containers/${modelsContainerName}/blobs/"
    assert module["params"]["modelsContainerName"] == bicep.shipbot_settings()["SHIPBOT_MODELS_CONTAINER"]
    images = targets["image_pushed"]["filter"]
    assert images["includedEventTypes"] == ["Microsoft.ContainerRegistry.ImagePushed"]
    assert images["advancedFilters"][0]["key"] == "data.target.repository"
    # Every application's repository (the settings' one, the allowed ones, the fleet's), each once, 25 a subscription
    assert module["params"]["repositories"] == "imageRepositories"
    assert bicep.text(bicep.main().section("variables")["imageRepositories"]["value"]) == \
        "union(concat([repository], allowedRepositories, map(fleetApps, app => app.image)), [])"
    assert bicep.text(eventgrid.section("variables")["repositoryChunks"]["value"]) == \
        "subscribe ? range(0, (length(repositories) + 24) / 25) : []"
    assert bicep.text(images["advancedFilters"][0]["values"]) == "take(skip(repositories, chunk * 25), 25)"
    (pushed,) = [r for r in subscriptions.values() if bicep.body(r)["properties"]["filter"] is targets["image_pushed"]["filter"]]
    assert pushed["config"]["loop_type"]["detail"] == {"item_name": "chunk", "array_name": "repositoryChunks"}
    assert bicep.text(bicep.body(pushed)["name"]) == "(chunk == 0) ? 'image-pushed' : 'image-pushed-${chunk + 1}'"


# -- the package the docs publish ---------------------------------------------------------------------------
def test_funcignore_keeps_everything_the_function_app_imports() -> None:
    """`func azure functionapp publish` leaves out what .funcignore names; the app must still import."""
    ignored = {line.strip() for line in (bicep.ROOT / ".funcignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    imported = set()
    for path in [bicep.ROOT / "function_app.py", *(bicep.ROOT / "functions").glob("*.py"), *(bicep.ROOT / "shared").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
    local_packages = {name for name in imported if (bicep.ROOT / name / "__init__.py").exists() or (bicep.ROOT / name).is_dir()}
    assert local_packages == {"functions", "shared"}  # what the app imports; model_api it never imports
    assert not local_packages & ignored
    assert "model_api" not in ignored  # but ships, as the source of the images built around a score.py
    assert not {"function_app.py", "host.json", "requirements.txt"} & ignored
    assert {".venv", "tests", "local.settings.json"} <= ignored
