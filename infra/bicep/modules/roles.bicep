// Every Azure role of the Function App's identity in this resource group, on the narrowest scope that works,
// plus the AKS kubelet's pull right and the model uploaders' right to upload. (The function's role on the
// cluster is in aks-access.bicep, Event Grid's dead-letter rights in eventgrid.bicep, its Kubernetes Role in
// kubernetes.bicep.) tests/unit/test_bicep_roles.py holds the expected table, with the reason for each.
//
// ACR Tasks: the builder and the smoke runner call listBuildSourceUploadUrl, scheduleRun, runs get, runs
// listLogSasUrl and runs cancel (a run past its budget). The least privileged built-in role with those is
// Container Registry Tasks Contributor, which also creates, edits and deletes persistent tasks (with their own
// triggers), agent pools and task runs, and deployments. A custom role with exactly the five actions leaves
// all of that out. (Any identity that may schedule a run can have the run push or pull anything in the
// registry with the registry's own rights: that is ACR Tasks' design, whichever role grants scheduleRun.)

@description('Object id of the Function App\'s system-assigned identity.')
param functionPrincipalId string

param dataAccountName string
param hostAccountName string
param modelsContainerName string
param ledgerContainerName string
param jobsQueueName string
param registryName string
param appInsightsName string
param keyVaultName string
param githubSecretName string
param azureDevOpsSecretName string

@description('Empty when no notification URL was given (keyvault.bicep made no secret).')
param notifySecretName string

@description('Empty when no git token was given (keyvault.bicep made no secret).')
param gitTokenSecretName string

@description('Object id of the AKS kubelet identity, which pulls the release images.')
param kubeletObjectId string

@description('Entra ID object ids (users or groups) allowed to upload models with their own sign-in.')
param modelUploaderPrincipalIds array

@description('An Azure ML workspace of this resource group whose model registry ShipBot reads (empty: none).')
param mlWorkspaceName string = ''

resource mlWorkspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = if (!empty(mlWorkspaceName)) {
  name: mlWorkspaceName
}

// MlflowModels reads registered versions and their artifacts and tags each version with its sha256 (a write):
// AzureML Data Scientist, the narrowest built-in role that writes model version tags.
resource functionMlWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(mlWorkspaceName)) {
  name: guid(mlWorkspace.id, functionPrincipalId, 'azureml-data-scientist')
  scope: mlWorkspace
  properties: {
    // AzureML Data Scientist
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'f6c7c914-8db3-469d-8ca1-694a8f32e121')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource data 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataAccountName
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: data
  name: 'default'
}

resource models 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: dataBlobs
  name: modelsContainerName
}

resource ledger 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: dataBlobs
  name: ledgerContainerName
}

resource dataQueues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: data
  name: 'default'
}

resource jobs 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: dataQueues
  name: jobsQueueName
}

resource jobsPoison 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: dataQueues
  name: '${jobsQueueName}-poison'
}

resource host 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource githubSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: githubSecretName
}

resource azureDevOpsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: azureDevOpsSecretName
}

resource notifySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = if (!empty(notifySecretName)) {
  parent: vault
  name: notifySecretName
}

resource gitTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = if (!empty(gitTokenSecretName)) {
  parent: vault
  name: gitTokenSecretName
}

resource acrTaskRunner 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'shipbot-acr-task-runner')
  properties: {
    roleName: 'ShipBot ACR task runner (${resourceGroup().name})'
    description: 'Upload a build context, schedule an ACR Tasks run, read, cancel and read the logs of runs.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action'
          'Microsoft.ContainerRegistry/registries/scheduleRun/action'
          'Microsoft.ContainerRegistry/registries/runs/read'
          'Microsoft.ContainerRegistry/registries/runs/listLogSasUrl/action'
          'Microsoft.ContainerRegistry/registries/runs/cancel/action'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

// -- the Function App's identity -----------------------------------------------------------------------------
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(host.id, functionPrincipalId, 'storage-blob-data-owner')
  scope: host
  properties: {
    // Storage Blob Data Owner
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource modelsContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(models.id, functionPrincipalId, 'storage-blob-data-contributor')
  scope: models
  properties: {
    // Storage Blob Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource ledgerContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ledger.id, functionPrincipalId, 'storage-blob-data-contributor')
  scope: ledger
  properties: {
    // Storage Blob Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource jobsContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(jobs.id, functionPrincipalId, 'storage-queue-data-contributor')
  scope: jobs
  properties: {
    // Storage Queue Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource jobsPoisonContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(jobsPoison.id, functionPrincipalId, 'storage-queue-data-contributor')
  scope: jobsPoison
  properties: {
    // Storage Queue Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionPrincipalId, 'monitoring-metrics-publisher')
  scope: appInsights
  properties: {
    // Monitoring Metrics Publisher
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource githubSecretUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(githubSecret.id, functionPrincipalId, 'key-vault-secrets-user')
  scope: githubSecret
  properties: {
    // Key Vault Secrets User
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource azureDevOpsSecretUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(azureDevOpsSecret.id, functionPrincipalId, 'key-vault-secrets-user')
  scope: azureDevOpsSecret
  properties: {
    // Key Vault Secrets User
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource notifySecretUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(notifySecretName)) {
  name: guid(notifySecret.id, functionPrincipalId, 'key-vault-secrets-user')
  scope: notifySecret
  properties: {
    // Key Vault Secrets User
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource gitTokenSecretUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(gitTokenSecretName)) {
  name: guid(gitTokenSecret.id, functionPrincipalId, 'key-vault-secrets-user')
  scope: gitTokenSecret
  properties: {
    // Key Vault Secrets User
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource registryTaskRunner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, functionPrincipalId, 'shipbot-acr-task-runner')
  scope: registry
  properties: {
    roleDefinitionId: acrTaskRunner.id
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource registryImporter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, functionPrincipalId, 'acr-data-importer-and-data-reader')
  scope: registry
  properties: {
    // Container Registry Data Importer and Data Reader
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '577a9874-89fd-4f24-9dbd-b5034d0ad23a')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// -- the AKS kubelet: pulls release images ---------------------------------------------------------------------
resource kubeletPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, kubeletObjectId, 'acrpull')
  scope: registry
  properties: {
    // AcrPull
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')
    principalId: kubeletObjectId
    principalType: 'ServicePrincipal'
  }
}

// -- people (or their groups) who upload models with `az storage blob upload --auth-mode login` ----------------
resource uploaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for uploader in modelUploaderPrincipalIds: {
  name: guid(models.id, uploader, 'storage-blob-data-contributor')
  scope: models
  properties: {
    // Storage Blob Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: uploader
  }
}]
