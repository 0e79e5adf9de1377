// ShipBot's storage: two accounts, both Entra ID only (no shared keys, no public blobs, TLS 1.2).
//
// data: what ShipBot's code talks to. The models container (Event Grid watches it), the ledger container,
//       the work queue and its poison queue, and the container Event Grid dead-letters into. Every identity
//       gets roles on single containers and queues here, never on the account.
// host: the Functions host's own storage (AzureWebJobsStorage: keys, timer schedules, singleton locks) and
//       the Flex Consumption deployment package. The host documents Storage Blob Data Owner on its account
//       (it creates its containers), so it gets an account of its own and no role on `data`.

@description('Azure region of both accounts.')
param location string

@description('Name of the data account (3-24 lowercase letters and digits).')
param dataAccountName string

@description('Name of the Functions host account (3-24 lowercase letters and digits).')
param hostAccountName string

@description('Container the data scientists upload models/<name>/<version>/<file> into.')
param modelsContainerName string

@description('Container of the release ledger (JSON documents and environment leases).')
param ledgerContainerName string

@description('Container Event Grid writes undeliverable events into.')
param deadLetterContainerName string

@description('Queue of the work jobs (smoke tests, rollouts); its poison queue is <name>-poison.')
param jobsQueueName string

@description('Container of the Flex Consumption deployment package, in the host account.')
param deploymentContainerName string

param tags object = {}

var accountProperties = {
  allowSharedKeyAccess: false
  allowBlobPublicAccess: false
  defaultToOAuthAuthentication: true
  minimumTlsVersion: 'TLS1_2'
  supportsHttpsTrafficOnly: true
  publicNetworkAccess: 'Enabled'
}

resource data 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: dataAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: accountProperties
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: data
  name: 'default'
  properties: {
    // A model or a ledger document deleted by mistake can be undeleted for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource models 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: modelsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource ledger 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: ledgerContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetter 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource dataQueues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: data
  name: 'default'
}

resource jobs 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: dataQueues
  name: jobsQueueName
}

// Made here rather than by the host on first use, so that the function's role can be scoped to it.
resource jobsPoison 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: dataQueues
  name: '${jobsQueueName}-poison'
}

resource host 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: hostAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: accountProperties
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: host
  name: 'default'
}

resource deployment 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output dataAccountName string = data.name
output dataAccountId string = data.id
output blobEndpoint string = data.properties.primaryEndpoints.blob
output queueEndpoint string = data.properties.primaryEndpoints.queue
output hostAccountName string = host.name
output deploymentContainerUrl string = '${host.properties.primaryEndpoints.blob}${deployment.name}'
