// What ShipBot needs inside the cluster, as Kubernetes objects that docs/deploy-azure.md applies with kubectl
// (kubectl apply -f for `access`, kubectl create -f for `app`). This module deploys nothing: the Bicep
// Kubernetes extension is a preview that needs the cluster's admin credentials, which a cluster with
// Entra ID-only access does not have.
//
// access  every namespace of `targets` (the app settings' application's staging and production, and each
//         Kubernetes environment of the fleet's other applications), a Role in each that may get, patch and
//         watch its Deployments only and get their Services' proxy only (the /version check), and a
//         RoleBinding of that Role to the function's identity. With Entra ID integration a managed identity reaches Kubernetes RBAC as the
//         user named by its object id. Kubernetes RBAC rather than Azure RBAC for Kubernetes: only a Role can
//         name the Deployment and the Service (resourceNames); an Azure role grants every Deployment of the
//         namespace. Safe to apply again at any time.
// app     the Deployments and Services ShipBot rolls out to, one of each per target, created once before the
//         first release. Its image is
//         a placeholder that never becomes ready; ShipBot patches the container's image to a release digest.
//         Created with `kubectl create`, so that applying it again fails instead of resetting a live image.

@description('Object id of the Function App\'s system-assigned identity.')
param functionPrincipalId string

@description('Every environment ShipBot rolls out to on the cluster: {namespace, deployment, service} (the Service\'s name; its port is servicePort). Two in one namespace are two Deployments under one Role.')
param targets array

@description('The container of that Deployment whose image ShipBot sets.')
param containerName string

param servicePort int

@description('The port the app listens on: shipbot.toml [smoke] port (model_api: 5001).')
param containerPort int

@description('The app\'s readiness path, probed by the kubelet: [smoke] ready_path (model_api: /readyz).')
param readinessPath string

@description('The app\'s liveness path; empty for no liveness probe (model_api: /healthz).')
param livenessPath string

@description('The Services\' port as ShipBot\'s proxy URL names it (SHIPBOT_K8S_SERVICE, a target\'s `service`: <name>:<this>): its number or its name.')
param serviceProxyPort string

@allowed([
  'ClusterIP'
  'LoadBalancer'
])
param serviceType string

@description('The image the Deployment starts with, before ShipBot\'s first rollout.')
param initialImage string

// Each namespace once, in the order the targets name them.
var namespaces = union(map(targets, target => target.namespace), [])

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
      resourceNames: map(filter(targets, target => ns == target.namespace), target => target.deployment)
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
      resourceNames: map(filter(targets, target => ns == target.namespace), target => '${target.service}:${serviceProxyPort}')
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

var deployments = [for target in targets: {
  apiVersion: 'apps/v1'
  kind: 'Deployment'
  metadata: {
    name: target.deployment
    namespace: target.namespace
    labels: {
      'app.kubernetes.io/name': target.deployment
      'app.kubernetes.io/managed-by': 'shipbot'
    }
  }
  spec: {
    replicas: 2
    progressDeadlineSeconds: 300
    selector: {
      matchLabels: {
        'app.kubernetes.io/name': target.deployment
        'app.kubernetes.io/managed-by': 'shipbot'
      }
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
        labels: {
          'app.kubernetes.io/name': target.deployment
          'app.kubernetes.io/managed-by': 'shipbot'
        }
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

var services = [for target in targets: {
  apiVersion: 'v1'
  kind: 'Service'
  metadata: {
    name: target.service
    namespace: target.namespace
    labels: {
      'app.kubernetes.io/name': target.deployment
      'app.kubernetes.io/managed-by': 'shipbot'
    }
  }
  spec: {
    type: serviceType
    selector: {
      'app.kubernetes.io/name': target.deployment
      'app.kubernetes.io/managed-by': 'shipbot'
    }
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
