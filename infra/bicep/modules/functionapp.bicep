// The Function App on Flex Consumption (plan FC1): Linux, Python 3.11, a system-assigned identity, HTTPS
// only. Its app settings are set by appsettings.bicep after roles.bicep has given the identity its roles, so
// that the Key Vault references resolve on the first start. The deployment package lives in a container of
// the host account, read with the same identity.

param location string

@description('Function App name: globally unique; the app is https://<name>.azurewebsites.net.')
param name string

@description('URL of the blob container that holds the deployment package (host account).')
param deploymentContainerUrl string

@description('Most instances Flex Consumption may scale out to.')
param maximumInstanceCount int

@description('Memory of one instance, in MB (2048 or 4096).')
@allowed([
  2048
  4096
])
param instanceMemoryMB int

param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${name}-plan'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

output name string = site.name
output id string = site.id
output principalId string = site.identity.principalId
output hostName string = site.properties.defaultHostName
