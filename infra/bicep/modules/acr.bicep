// The container registry: Standard (ACR Tasks, webhooks and Event Grid need no more), no admin user and no
// anonymous pull, so every pull and push is an Entra ID identity with a role (roles.bicep).

param location string

@description('Registry name: 5-50 letters and digits, globally unique; images are <name>.azurecr.io/<repository>.')
param name string

param tags object = {}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

output name string = registry.name
output id string = registry.id
output loginServer string = registry.properties.loginServer
