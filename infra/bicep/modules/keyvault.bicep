// Key Vault for ShipBot's secrets: the two webhook secrets and the optional notification URL. RBAC
// authorization (no access policies), so the function's identity can be given Key Vault Secrets User on each
// secret alone (roles.bicep). The app settings reference the versionless secret URIs, so a rotated secret is
// picked up without a redeployment (App Service re-reads references within 24 hours, or on restart).
//
// The secrets are always created: App Service keeps an unresolvable reference as the literal
// "@Microsoft.KeyVault(...)" string, and a webhook secret must never silently become that public text.

param location string

@description('Vault name: 3-24 letters, digits and dashes, globally unique.')
param name string

@secure()
@description('Shared secret of the GitHub webhook (X-Hub-Signature-256).')
param githubWebhookSecret string

@secure()
@description('Basic-auth secret of the Azure DevOps service hook.')
param azureDevOpsWebhookSecret string

@secure()
@description('Teams/Slack incoming-webhook URL; empty: no secret is made and ShipBot only logs.')
param notifyUrl string = ''

@secure()
@description('Token for a private git repository; empty: no secret is made.')
param gitToken string = ''

param tags object = {}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

resource githubSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'shipbot-github-secret'
  properties: {
    value: githubWebhookSecret
    contentType: 'text/plain'
  }
}

resource azureDevOpsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'shipbot-azure-devops-secret'
  properties: {
    value: azureDevOpsWebhookSecret
    contentType: 'text/plain'
  }
}

resource notifySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(notifyUrl)) {
  parent: vault
  name: 'shipbot-notify-url'
  properties: {
    value: notifyUrl
    contentType: 'text/uri-list'
  }
}

resource gitTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(gitToken)) {
  parent: vault
  name: 'shipbot-git-token'
  properties: {
    value: gitToken
    contentType: 'text/plain'
  }
}

output name string = vault.name
output githubSecretName string = githubSecret.name
output azureDevOpsSecretName string = azureDevOpsSecret.name
output notifySecretName string = empty(notifyUrl) ? '' : notifySecret.name
output githubSecretUri string = githubSecret.properties.secretUri
output azureDevOpsSecretUri string = azureDevOpsSecret.properties.secretUri
output notifySecretUri string = empty(notifyUrl) ? '' : notifySecret.properties.secretUri
output gitTokenSecretName string = empty(gitToken) ? '' : gitTokenSecret.name
output gitTokenSecretUri string = empty(gitToken) ? '' : gitTokenSecret.properties.secretUri
