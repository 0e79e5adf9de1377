// The Function App's app settings, applied once its identity has its roles (main.bicep orders this module
// after roles.bicep). Two groups:
//
//   host settings   what the Functions host reads: its storage and telemetry, both with the identity, and the
//                   identity-based connection of the queue bindings (connection "SHIPBOT_STORAGE").
//   ShipBot         every SHIPBOT_* setting, built by main.bicep (shipbotSettings) from its parameters.
//
// The queue bindings' connection is named SHIPBOT_STORAGE, and SHIPBOT_STORAGE itself is the blob account URL
// that shared/settings.py reads. The host takes a connection setting with a value as a connection string, so
// "SHIPBOT_STORAGE__queueServiceUri" next to it would never be read (the host would parse the URL as a
// connection string and fail). The host looks for "AzureWebJobs" + <connection> before <connection>, so
// the identity-based connection lives under that prefix, where it wins.
//
// FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION are not set: Flex Consumption refuses them (the
// runtime is functionAppConfig.runtime in functionapp.bicep).

@description('Name of the Function App (functionapp.bicep).')
param functionAppName string

@description('Host account (AzureWebJobsStorage, identity-based).')
param hostAccountName string

@description('Queue endpoint of the data account, https://<account>.queue.core.windows.net/.')
param queueEndpoint string

@description('Application Insights connection string (not a secret: it carries no key once local auth is off).')
param appInsightsConnectionString string

@description('SHIPBOT_* name -> value.')
param shipbotSettings object

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

var hostSettings = {
  AzureWebJobsStorage__accountName: hostAccountName
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  AzureWebJobsSHIPBOT_STORAGE__queueServiceUri: queueEndpoint
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(hostSettings, shipbotSettings)
}
