// The AKS cluster, when ShipBot is to make one (createCluster); an existing cluster is only referenced, by
// aks-access.bicep. Either way the cluster must have Microsoft Entra ID integration: the function signs in to
// the API server with its managed identity, and Kubernetes RBAC (kubernetes.bicep's Role and RoleBinding)
// decides what it may do there. A new cluster has no local accounts when admin groups are given, so every
// person and program reaching it is an Entra ID identity.

@description('Make the cluster (true) or use an existing one of this name in this resource group (false).')
param createCluster bool

param location string
param name string

@description('Nodes of the one system pool.')
param nodeCount int

param nodeVmSize string

@description('Entra ID groups whose members are cluster admins; empty keeps the local admin account.')
param adminGroupObjectIds array

param tags object = {}

resource cluster 'Microsoft.ContainerService/managedClusters@2024-08-01' = if (createCluster) {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Base'
    tier: 'Free'
  }
  properties: {
    dnsPrefix: name
    enableRBAC: true
    aadProfile: {
      managed: true
      enableAzureRBAC: false
      adminGroupObjectIDs: adminGroupObjectIds
    }
    disableLocalAccounts: !empty(adminGroupObjectIds)
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        count: nodeCount
        vmSize: nodeVmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
      }
    ]
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
    }
  }
}
