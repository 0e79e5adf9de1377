// Application Insights on a Log Analytics workspace. Local (instrumentation key) authentication is off:
// the Functions host sends telemetry with its managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING),
// which needs Monitoring Metrics Publisher on the component (roles.bicep).

param location string
param workspaceName string
param appInsightsName string

@description('How long the workspace keeps logs, in days.')
param retentionDays int

param tags object = {}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

output appInsightsName string = appInsights.name
output connectionString string = appInsights.properties.ConnectionString
