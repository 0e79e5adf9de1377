// ShipBot on Azure: everything the Function App talks to, and the least privilege it needs to do so.
// Deployed into one resource group (an existing AKS cluster may live in another); docs/deploy-azure.md walks
// through it from an empty subscription. Bicep cannot be compiled on ShipBot's development machines:
// tests/unit/test_bicep_structure.py checks these files' structure instead (see the docs for what that
// covers and what it does not).
//
// Order: storage, registry, vault, monitoring, cluster -> Function App (its identity) -> roles -> app settings
// (so that the Key Vault references resolve on the first start) -> Event Grid (subscribe = true only once
// the functions are published).

targetScope = 'resourceGroup'

@description('Azure region of every resource.')
param location string = resourceGroup().location

@description('Prefix of resource names; a hash of the resource group makes the global names unique.')
@minLength(3)
@maxLength(10)
param namePrefix string = 'shipbot'

param tags object = {
  app: 'shipbot'
}

// -- the application ------------------------------------------------------------------------------------------
@description('The application\'s git repository (SHIPBOT_GIT_REPO), e.g. https://github.com/<owner>/<repo>.')
param gitRepositoryUrl string

@description('Pushes to this branch are built (SHIPBOT_RELEASE_BRANCH).')
param releaseBranch string = 'main'

@description('Repository of the release images in the registry (SHIPBOT_REPOSITORY).')
param repository string = 'shipbot/app'

@description('Other repositories whose pushed images are smoke-tested and deployed (SHIPBOT_ALLOWED_REPOSITORIES).')
param allowedRepositories array = []

@description('The model the app ships; empty: the most recently uploaded one (SHIPBOT_MODEL_NAME).')
param modelName string = ''

@description('An Azure ML workspace in this resource group whose model registry the app\'s models come from (SHIPBOT_MODEL_SOURCE=mlflow): its ModelRegistered events are subscribed and the app may read its registry. Empty: the models container.')
param mlWorkspaceName string = ''

@description('With mlWorkspaceName: release the version this alias points at (e.g. champion); empty: every newly registered version.')
param modelAlias string = ''

resource mlWorkspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = if (!empty(mlWorkspaceName)) {
  name: mlWorkspaceName
}

@description('Base image of the release images (SHIPBOT_BASE_IMAGE).')
param baseImage string = 'python:3.11-slim'

param modelsContainer string = 'models'
param ledgerContainer string = 'ledger'

@description('Work queue of smoke tests and rollouts (SHIPBOT_JOBS_QUEUE).')
param jobsQueue string = 'shipbot-jobs'

@description('The application these parameters describe while no fleet file is applied (SHIPBOT_APP_NAME).')
param appName string = 'app'

@description('NCRONTAB, UTC: when the newest green staging release goes to production.')
param promotionSchedule string = '0 0 2 * * *'

@description('NCRONTAB, UTC: how often reconcile repairs what a lost event left undone.')
param reconcileSchedule string = '0 */5 * * * *'

@description('A failed build is retried by reconcile up to this many attempts in all.')
param maxBuildAttempts int = 3

@description('The smoke test\'s budget, in seconds.')
param smokeSeconds int = 180

@description('How long a rollout may take to verify, in seconds.')
param verifySeconds int = 120

// -- secrets: never in a parameters file; docs/deploy-azure.md reads them back from Key Vault on redeploys ------
@secure()
@minLength(32)
@description('Shared secret of the GitHub webhook.')
param githubWebhookSecret string

@secure()
@minLength(32)
@description('Basic-auth secret of the Azure DevOps service hook (make one even if you do not use it).')
param azureDevOpsWebhookSecret string

@secure()
@description('Teams/Slack incoming-webhook URL; empty: notifications go to the log only.')
param notifyUrl string = ''

@secure()
@description('Read access to a private GitHub or Azure Repos repository (SHIPBOT_GIT_TOKEN); empty: a public GitHub repository, or Azure Repos with the function\'s identity.')
param gitToken string = ''

@description('Production runs <registry>/<prefix>/<repository>@<digest>, imported into the registry when a release is promoted (SHIPBOT_PRODUCTION_PREFIX); empty: production runs the staging image itself.')
param productionPrefix string = 'production'

// -- the cluster ----------------------------------------------------------------------------------------------
@description('Make a new AKS cluster (true) or use an existing one named aksName in aksResourceGroup (false).')
param createAks bool = true

param aksName string = '${namePrefix}-aks'

@description('Resource group of the cluster (an existing cluster may live elsewhere).')
param aksResourceGroup string = resourceGroup().name

param aksNodeCount int = 2
param aksNodeVmSize string = 'Standard_D2s_v5'

@description('Entra ID groups of the cluster\'s admins (a new cluster); they apply kubernetes.bicep\'s objects.')
param clusterAdminGroupObjectIds array = []

param stagingNamespace string = 'staging'
param productionNamespace string = 'production'

@description('The Deployment ShipBot rolls out in each namespace, and its container.')
param deploymentName string = 'app'

param containerName string = 'model-api'
@description('The port the app\'s container listens on, as its shipbot.toml [smoke] port says (model_api: 5001).')
param containerPort int = 5001
@description('Its readiness path ([smoke] ready_path); its liveness path, empty for none.')
param readinessPath string = '/readyz'
param livenessPath string = '/healthz'
param serviceName string = 'app'
param servicePort int = 80

@description('The Service\'s port as ShipBot\'s /version check names it in the API server\'s proxy URL: its number (default) or its name, e.g. http. The Role allows exactly that name.')
param serviceProxyPort string = string(servicePort)

// The Service as the proxy URL names it: the deployer's SHIPBOT_K8S_SERVICE and the Role's resourceName.
var serviceProxyName = '${serviceName}:${serviceProxyPort}'

@allowed([
  'ClusterIP'
  'LoadBalancer'
])
param serviceType string = 'ClusterIP'

@description('Image of the Deployments before the first release: a placeholder that never becomes ready.')
param initialImage string = 'mcr.microsoft.com/oss/kubernetes/pause:3.9'

// -- the fleet ------------------------------------------------------------------------------------------------
@description('The fleet file\'s other applications, for what Azure holds for them: [{name, image, targets: [{namespace, deployment, service}]}], each target one of its Kubernetes environments (service: the Service\'s name; its port is servicePort; targets: [] for an application with none). Their Deployments get this template\'s container name, port and probes. The application the parameters above describe is always there. docs/deploy-azure.md shows a fleet of two.')
param fleetApps array = []

// Every Deployment ShipBot rolls out to, and every repository whose pushes it takes.
var clusterTargets = concat([
  {
    namespace: stagingNamespace
    deployment: deploymentName
    service: serviceName
  }
  {
    namespace: productionNamespace
    deployment: deploymentName
    service: serviceName
  }
], flatten(map(fleetApps, app => app.targets)))
var imageRepositories = union(concat([
  repository
], allowedRepositories, map(fleetApps, app => app.image)), [])

// -- delivery and scale ---------------------------------------------------------------------------------------
@description('Subscribe the Event Grid triggers; only once the functions are published (docs/deploy-azure.md).')
param subscribeEvents bool = false

@minValue(1)
@maxValue(30)
param eventMaxDeliveryAttempts int = 30

@description('Minutes Event Grid retries an event before dead-lettering it (at most 24 h).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveMinutes int = 1440

@description('Entra ID object ids (users or groups) allowed to upload models into the models container.')
param modelUploaderPrincipalIds array = []

param functionMaximumInstances int = 40

@allowed([
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Days Log Analytics keeps the logs.')
param logRetentionDays int = 30

var suffix = uniqueString(resourceGroup().id, namePrefix)
var compactPrefix = toLower(replace(namePrefix, '-', '')) // storage and registry names: letters and digits only
var functionAppName = '${namePrefix}-${suffix}'
var deadLetterContainer = 'deadletter'

module storage 'modules/storage.bicep' = {
  name: 'shipbot-storage'
  params: {
    location: location
    tags: tags
    dataAccountName: take('${compactPrefix}d${suffix}', 24)
    hostAccountName: take('${compactPrefix}h${suffix}', 24)
    modelsContainerName: modelsContainer
    ledgerContainerName: ledgerContainer
    deadLetterContainerName: deadLetterContainer
    jobsQueueName: jobsQueue
    deploymentContainerName: 'app-package'
  }
}

module acr 'modules/acr.bicep' = {
  name: 'shipbot-acr'
  params: {
    location: location
    tags: tags
    name: '${compactPrefix}${suffix}'
  }
}

module keyvault 'modules/keyvault.bicep' = {
  name: 'shipbot-keyvault'
  params: {
    location: location
    tags: tags
    name: take('${namePrefix}-${suffix}', 24)
    githubWebhookSecret: githubWebhookSecret
    azureDevOpsWebhookSecret: azureDevOpsWebhookSecret
    notifyUrl: notifyUrl
    gitToken: gitToken
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'shipbot-monitoring'
  params: {
    location: location
    tags: tags
    workspaceName: '${functionAppName}-logs'
    appInsightsName: functionAppName
    retentionDays: logRetentionDays
  }
}

module aks 'modules/aks.bicep' = {
  name: 'shipbot-aks'
  scope: resourceGroup(aksResourceGroup)
  params: {
    createCluster: createAks
    location: location
    tags: tags
    name: aksName
    nodeCount: aksNodeCount
    nodeVmSize: aksNodeVmSize
    adminGroupObjectIds: clusterAdminGroupObjectIds
  }
}

module functionapp 'modules/functionapp.bicep' = {
  name: 'shipbot-functionapp'
  params: {
    location: location
    tags: tags
    name: functionAppName
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    maximumInstanceCount: functionMaximumInstances
    instanceMemoryMB: functionInstanceMemoryMB
  }
}

module aksAccess 'modules/aks-access.bicep' = {
  name: 'shipbot-aks-access'
  scope: resourceGroup(aksResourceGroup)
  dependsOn: [
    aks
  ]
  params: {
    clusterName: aksName
    functionPrincipalId: functionapp.outputs.principalId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'shipbot-roles'
  params: {
    functionPrincipalId: functionapp.outputs.principalId
    dataAccountName: storage.outputs.dataAccountName
    hostAccountName: storage.outputs.hostAccountName
    modelsContainerName: modelsContainer
    ledgerContainerName: ledgerContainer
    jobsQueueName: jobsQueue
    registryName: acr.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyvault.outputs.name
    githubSecretName: keyvault.outputs.githubSecretName
    azureDevOpsSecretName: keyvault.outputs.azureDevOpsSecretName
    notifySecretName: keyvault.outputs.notifySecretName
    gitTokenSecretName: keyvault.outputs.gitTokenSecretName
    kubeletObjectId: aksAccess.outputs.kubeletObjectId
    modelUploaderPrincipalIds: modelUploaderPrincipalIds
    mlWorkspaceName: mlWorkspaceName
  }
}

// Every SHIPBOT_* app setting. The names are shared/settings.py's and the binding expressions' of functions/;
// tests/unit/test_bicep_structure.py checks that none is missing and that each value comes from the resource
// the code expects.
var shipbotSettings = {
  SHIPBOT_TARGET: 'azure'
  SHIPBOT_APP_NAME: appName
  SHIPBOT_STORAGE: storage.outputs.blobEndpoint
  SHIPBOT_MODELS_CONTAINER: modelsContainer
  SHIPBOT_LEDGER_CONTAINER: ledgerContainer
  SHIPBOT_JOBS_QUEUE: jobsQueue
  SHIPBOT_GIT_REPO: gitRepositoryUrl
  SHIPBOT_RELEASE_BRANCH: releaseBranch
  SHIPBOT_REGISTRY: acr.outputs.loginServer
  SHIPBOT_REPOSITORY: repository
  SHIPBOT_ALLOWED_REPOSITORIES: join(allowedRepositories, ',')
  SHIPBOT_MODEL_NAME: modelName
  SHIPBOT_MODEL_SOURCE: empty(mlWorkspaceName) ? 'blob' : 'mlflow'
  SHIPBOT_MODEL_ALIAS: modelAlias
  SHIPBOT_MLFLOW_URI: empty(mlWorkspaceName) ? '' : mlWorkspace.properties.mlFlowTrackingUri
  SHIPBOT_BASE_IMAGE: baseImage
  SHIPBOT_PROMOTION_SCHEDULE: promotionSchedule
  SHIPBOT_RECONCILE_SCHEDULE: reconcileSchedule
  SHIPBOT_MAX_BUILD_ATTEMPTS: string(maxBuildAttempts)
  SHIPBOT_SMOKE_SECONDS: string(smokeSeconds)
  SHIPBOT_VERIFY_SECONDS: string(verifySeconds)
  SHIPBOT_GITHUB_SECRET: '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.githubSecretUri})'
  SHIPBOT_AZURE_DEVOPS_SECRET: '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.azureDevOpsSecretUri})'
  SHIPBOT_NOTIFY_URL: empty(notifyUrl) ? '' : '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.notifySecretUri})'
  SHIPBOT_GIT_TOKEN: empty(gitToken) ? '' : '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.gitTokenSecretUri})'
  SHIPBOT_PRODUCTION_PREFIX: productionPrefix
  // Where the cloud adapters find the registry's and the cluster's ARM resources and the Deployments; the
  // wiring (shared/wiring.py) reads them once SHIPBOT_TARGET=azure has adapters.
  SHIPBOT_REGISTRY_RESOURCE_ID: acr.outputs.id
  SHIPBOT_AKS_RESOURCE_ID: aksAccess.outputs.id
  SHIPBOT_STAGING_NAMESPACE: stagingNamespace
  SHIPBOT_PRODUCTION_NAMESPACE: productionNamespace
  SHIPBOT_K8S_DEPLOYMENT: deploymentName
  SHIPBOT_K8S_CONTAINER: containerName
  SHIPBOT_K8S_SERVICE: serviceProxyName
}

module appsettings 'modules/appsettings.bicep' = {
  name: 'shipbot-appsettings'
  dependsOn: [
    roles
  ]
  params: {
    functionAppName: functionapp.outputs.name
    hostAccountName: storage.outputs.hostAccountName
    queueEndpoint: storage.outputs.queueEndpoint
    appInsightsConnectionString: monitoring.outputs.connectionString
    shipbotSettings: shipbotSettings
  }
}

module eventgrid 'modules/eventgrid.bicep' = {
  name: 'shipbot-eventgrid'
  dependsOn: [
    appsettings
  ]
  params: {
    location: location
    tags: tags
    subscribe: subscribeEvents
    dataAccountName: storage.outputs.dataAccountName
    modelsContainerName: modelsContainer
    deadLetterContainerName: deadLetterContainer
    registryName: acr.outputs.name
    functionAppId: functionapp.outputs.id
    repositories: imageRepositories
    maxDeliveryAttempts: eventMaxDeliveryAttempts
    eventTimeToLiveMinutes: eventTimeToLiveMinutes
    mlWorkspaceName: mlWorkspaceName
  }
}

module kubernetes 'modules/kubernetes.bicep' = {
  name: 'shipbot-kubernetes'
  params: {
    functionPrincipalId: functionapp.outputs.principalId
    targets: clusterTargets
    containerName: containerName
    containerPort: containerPort
    readinessPath: readinessPath
    livenessPath: livenessPath
    servicePort: servicePort
    serviceProxyPort: serviceProxyPort
    serviceType: serviceType
    initialImage: initialImage
  }
}

output functionAppName string = functionapp.outputs.name
output functionAppHostName string = functionapp.outputs.hostName
output functionPrincipalId string = functionapp.outputs.principalId
output registryLoginServer string = acr.outputs.loginServer
output keyVaultName string = keyvault.outputs.name
output dataAccountName string = storage.outputs.dataAccountName
output modelsContainer string = modelsContainer
output aksName string = aksName
output aksResourceGroup string = aksResourceGroup
output kubernetesAccess object = kubernetes.outputs.access
output kubernetesApp object = kubernetes.outputs.app
