// What the function's identity may do on the cluster at the Azure level, deployed into the cluster's
// resource group: Azure Kubernetes Service Cluster User Role, which is listClusterUserCredential and nothing
// else (the kubeconfig gives the API server's URL and CA; the function signs in with its own token). What it
// may do inside the cluster is kubernetes.bicep's namespaced Role. Also reads the kubelet identity, which
// roles.bicep gives AcrPull on the registry.

param clusterName string

@description('Object id of the Function App\'s system-assigned identity.')
param functionPrincipalId string

resource cluster 'Microsoft.ContainerService/managedClusters@2024-08-01' existing = {
  name: clusterName
}

resource clusterUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cluster.id, functionPrincipalId, 'aks-cluster-user')
  scope: cluster
  properties: {
    // Azure Kubernetes Service Cluster User Role
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4abbcc35-e782-43d8-92c5-2d3f1bd2253f')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output id string = cluster.id
output kubeletObjectId string = cluster.properties.identityProfile.kubeletidentity.objectId
