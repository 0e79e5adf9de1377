// Event Grid: a system topic on the data account (BlobCreated in the models container), one on the
// registry (ImagePushed for ShipBot's repositories) and, when an Azure ML workspace is named, one on the
// workspace (ModelRegistered: its model registry), each subscribed by its function through the
// AzureFunction endpoint type, in the Event Grid schema. That endpoint needs no key in the template (Event
// Grid fetches the function's system key itself), but the function must exist: a first deployment runs with
// subscribe = false, the code is published, and a second deployment subscribes (docs/deploy-azure.md).
//
// Delivery is retried (maxDeliveryAttempts, eventTimeToLiveInMinutes); what is still undelivered is written
// to the dead-letter container by the topic's own identity, which gets Storage Blob Data Contributor on that
// container and nothing else. ShipBot does not depend on every event arriving: the reconcile timer repairs
// what a lost event left undone.

param location string

@description('Subscribe the functions (they must be published first).')
param subscribe bool

param dataAccountName string
param modelsContainerName string
param deadLetterContainerName string
param registryName string

@description('Resource id of the Function App; the endpoints are <id>/functions/<function name>.')
param functionAppId string

@description('Repositories whose pushes are delivered: every application\'s of the fleet and the allowed ones.')
param repositories array

@description('Delivery attempts before an event is dead-lettered (1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int

@description('Minutes an event is retried before it is dead-lettered (1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveMinutes int

@description('An Azure ML workspace of this resource group whose registered models ShipBot releases (empty: none).')
param mlWorkspaceName string = ''

param tags object = {}

resource data 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataAccountName
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: data
  name: 'default'
}

resource deadLetter 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: dataBlobs
  name: deadLetterContainerName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource storageTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${dataAccountName}-events'
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: data.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource registryTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${registryName}-events'
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: registry.id
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
}

resource mlWorkspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = if (!empty(mlWorkspaceName)) {
  name: mlWorkspaceName
}

resource mlTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = if (!empty(mlWorkspaceName)) {
  name: '${mlWorkspaceName}-events'
  location: mlWorkspace.location  // a system topic lives where its source does
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: mlWorkspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource mlTopicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(mlWorkspaceName)) {
  name: guid(deadLetter.id, mlTopic.id, 'storage-blob-data-contributor')
  scope: deadLetter
  properties: {
    // Storage Blob Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: mlTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource storageTopicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, storageTopic.id, 'storage-blob-data-contributor')
  scope: deadLetter
  properties: {
    // Storage Blob Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: storageTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource registryTopicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, registryTopic.id, 'storage-blob-data-contributor')
  scope: deadLetter
  properties: {
    // Storage Blob Data Contributor
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: registryTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

var retryPolicy = {
  maxDeliveryAttempts: maxDeliveryAttempts
  eventTimeToLiveInMinutes: eventTimeToLiveMinutes
}

var deadLetterDestination = {
  endpointType: 'StorageBlob'
  properties: {
    resourceId: data.id
    blobContainerName: deadLetterContainerName
  }
}

resource modelUploaded 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (subscribe) {
  parent: storageTopic
  name: 'model-uploaded'
  dependsOn: [
    storageTopicDeadLetter
  ]
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/model_uploaded'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${modelsContainerName}/blobs/'
      // Only calls that leave a complete blob: an ADLS CreateFile makes an empty file (FlushWithClose
      // completes it). shared/events.py ignores CreateFile as well; this saves the delivery.
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: [
            'PutBlob'
            'PutBlockList'
            'CopyBlob'
            'FlushWithClose'
          ]
        }
      ]
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: deadLetterDestination
    }
  }
}

// A subscription's filters take at most 25 values in all: one subscription per 25 repositories (the first keeps
// the name it always had); none until the functions are published.
var repositoryChunks = subscribe ? range(0, (length(repositories) + 24) / 25) : []

resource imagePushed 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = [for chunk in repositoryChunks: {
  parent: registryTopic
  name: (chunk == 0) ? 'image-pushed' : 'image-pushed-${chunk + 1}'
  dependsOn: [
    registryTopicDeadLetter
  ]
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/image_pushed'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.ContainerRegistry.ImagePushed'
      ]
      // One subject prefix cannot name several repositories; the repository field can.
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.target.repository'
          values: take(skip(repositories, chunk * 25), 25)
        }
      ]
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: deadLetterDestination
    }
  }
}]

// ModelRegistered only: ModelDeployed is Azure ML deploying by itself, and the rest is about runs and data sets.
// An alias or stage moved in the registry sends no event; the reconcile timer finds it.
resource modelRegistered 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (subscribe && !empty(mlWorkspaceName)) {
  parent: mlTopic
  name: 'model-registered'
  dependsOn: [
    mlTopicDeadLetter
  ]
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/model_registered'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.ModelRegistered'
      ]
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: deadLetterDestination
    }
  }
}
