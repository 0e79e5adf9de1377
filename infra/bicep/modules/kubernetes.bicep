// What ShipBot needs inside the cluster, as Kubernetes objects that docs/deploy-azure.md applies with kubectl
// (kubectl apply -f for `access`, kubectl create -f for `app`). This module deploys nothing: the Bicep
// Kubernetes extension is a preview that needs the cluster's admin credentials, which a cluster with
// Entra ID-only access does not have.
//
// access  the staging and production namespaces, a Role in each that may get, patch and watch the one
//         Deployment and get the one Service's proxy (the /version check), and a RoleBinding of that Role to
//         the function's identity. With Entra ID integration a managed identity reaches Kubernetes RBAC as the
//         user named by its object id. Kubernetes RBAC rather than Azure RBAC for Kubernetes: only a Role can
//         name the Deployment and the Service (resourceNames); an Azure role grants every Deployment of the
//         namespace. Safe to apply again at any time.
// app     the Deployment and Service ShipBot rolls out to, created once before the first release. Its image is
//         a placeholder that never becomes ready; ShipBot patches the container's image to a release digest.
//         Created with `kubectl create`, so that applying it again fails instead of resetting a live image.

@description('Object id of the Function App\'s system-assigned identity.')
param functionPrincipalId string

param stagingNamespace string
param productionNamespace string

@description('The Deployment ShipBot patches in each namespace.')
param deploymentName string

@description('The container of that Deployment whose image ShipBot sets.')
param containerName string

@description('The Service in front of it, through which ShipBot checks /version.')
param serviceName string

param servicePort int

@description('The port the app listens on: shipbot.toml [smoke] port (model_api: 5001).')
param containerPort int

@description('The app\'s readiness path, probed by the kubelet: [smoke] ready_path (model_api: /readyz).')
param readinessPath string

@description('The app\'s liveness path; empty for no liveness probe (model_api: /healthz).')
param livenessPath string

@description('The Service as ShipBot\'s proxy URL names it (SHIPBOT_K8S_SERVICE): <name>:<port number or name>.')
param serviceProxyName string

@allowed([
  'ClusterIP'
  'LoadBalancer'
])
param serviceType string

@description('The image the Deployment starts with, before ShipBot\'s first rollout.')
param initialImage string

var namespaces = [
  stagingNamespace
  productionNamespace
]


var namespaceObjects = [for ns in namespaces: {
  apiVersion: 'v1'
  kind: 'Namespace'
  metadata: {
    name: ns
    labels: {
      'app.kubernetes.io/managed-by': 'shipbot'
    }
  }
}]

var roles = [for ns in namespaces: {
  apiVersion: 'rbac.authorization.k8s.io/v1'
  kind: 'Role'
  metadata: {
    name: 'shipbot-deployer'
    namespace: ns
  }
  rules: [
    {
      apiGroups: [
        'apps'
      ]
      resources: [
        'deployments'
      ]
      resourceNames: [
        deploymentName
      ]
      verbs: [
        'get'
        'patch'
        'watch'
      ]
    }
    {
      apiGroups: [
        ''
      ]
      resources: [
        'services/proxy'
      ]
      // The API server authorizes the proxy by the id in its path, as written: only the one ShipBot uses.
      resourceNames: [
        serviceProxyName
      ]
      verbs: [
        'get'
      ]
    }
  ]
}]

var roleBindings = [for ns in namespaces: {
  apiVersion: 'rbac.authorization.k8s.io/v1'
  kind: 'RoleBinding'
  metadata: {
    name: 'shipbot-deployer'
    namespace: ns
  }
  roleRef: {
    apiGroup: 'rbac.authorization.k8s.io'
    kind: 'Role'
    name: 'shipbot-deployer'
  }
  subjects: [
    {
      apiGroup: 'rbac.authorization.k8s.io'
      kind: 'User'
      name: functionPrincipalId
    }
  ]
}]

var labels = {
  'app.kubernetes.io/name': deploymentName
  'app.kubernetes.io/managed-by': 'shipbot'
}

var deployments = [for ns in namespaces: {
  apiVersion: 'apps/v1'
  kind: 'Deployment'
  metadata: {
    name: deploymentName
    namespace: ns
    labels: labels
  }
  spec: {
    replicas: 2
    progressDeadlineSeconds: 300
    selector: {
      matchLabels: labels
    }
    strategy: {
      type: 'RollingUpdate'
      rollingUpdate: {
        maxUnavailable: 0
        maxSurge: 1
      }
    }
    template: {
      metadata: {
        labels: labels
      }
      spec: {
        containers: [
          {
            name: containerName
            image: initialImage
            ports: [
              {
                name: 'http'
                containerPort: containerPort
              }
            ]
            readinessProbe: {
              httpGet: {
                path: readinessPath
                port: 'http'
              }
              periodSeconds: 5
            }
            livenessProbe: empty(livenessPath) ? null : {
              httpGet: {
                path: livenessPath
                port: 'http'
              }
              initialDelaySeconds: 30
              periodSeconds: 10
            }
          }
        ]
      }
    }
  }
}]

var services = [for ns in namespaces: {
  apiVersion: 'v1'
  kind: 'Service'
  metadata: {
    name: serviceName
    namespace: ns
    labels: labels
  }
  spec: {
    type: serviceType
    selector: labels
    ports: [
      {
        name: 'http'
        port: servicePort
        targetPort: 'http'
      }
    ]
  }
}]

output access object = {
  apiVersion: 'v1'
  kind: 'List'
  items: concat(namespaceObjects, roles, roleBindings)
}

output app object = {
  apiVersion: 'v1'
  kind: 'List'
  items: concat(deployments, services)
}
