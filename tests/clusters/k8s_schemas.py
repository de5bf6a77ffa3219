"""Structural JSON schemas (draft-07) for the Kubernetes objects in clusters/k8s.

No installed package ships KubeRay's schema, and tests never download, so the part that matters
is derived here by hand:

* RayCluster / RayJob (ray.io/v1): from the KubeRay CRDs in ray-project/kuberay,
  ray-operator/config/crd/bases/ray.io_rayclusters.yaml and ray.io_rayjobs.yaml at commit
  1184bc872c0801e59c18caf8a1a4eb5f2800ce93 (`versions[name=v1].schema.openAPIV3Schema`: field
  names, types, the quantity pattern, and the `required` lists: spec -> headGroupSpec;
  headGroupSpec -> rayStartParams, template; worker group -> groupName, maxReplicas, minReplicas,
  rayStartParams, template; pod spec -> containers), with the fields added since then taken from
  the Go types ray-operator/apis/ray/v1/raycluster_types.go @3275ee09f6a6 and rayjob_types.go
  @f6ef3f7b3263 (suspend, managedBy, headService, idleTimeoutSeconds, numOfHosts,
  gcsFaultToleranceOptions, submissionMode, deletionPolicy, backoffLimit, ...). KubeRay >= 1.4 no
  longer requires rayStartParams; keeping it required here keeps the manifests valid for older
  operators too.
* Pods, Deployments, Services, PVCs, Namespaces, ServiceAccounts: the Kubernetes API reference
  (core/v1, apps/v1), down to the fields these manifests use.

Unlike the API server (which prunes or rejects unknown fields depending on its validation mode),
these schemas reject every unknown field, so a misspelt key fails here rather than vanishing.
"""
from __future__ import annotations

from typing import Any


def obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


STRING, INTEGER, BOOLEAN, NUMBER = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
ANY_OBJECT = {"type": "object"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
# x-kubernetes-int-or-string with the CRD's pattern for resource.Quantity
QUANTITY = {"anyOf": [INTEGER, {
    "type": "string",
    "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
}]}
INT_OR_STRING = {"anyOf": [INTEGER, STRING]}
DNS_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253}

OBJECT_META = obj({"name": DNS_NAME, "namespace": DNS_NAME, "labels": STRING_MAP, "annotations": STRING_MAP},
                  required=("name",))
TEMPLATE_META = obj({"name": STRING, "namespace": STRING, "labels": STRING_MAP, "annotations": STRING_MAP,
                     "finalizers": array(STRING)})
RESOURCES = obj({"limits": {"type": "object", "additionalProperties": QUANTITY},
                 "requests": {"type": "object", "additionalProperties": QUANTITY},
                 "claims": array(ANY_OBJECT)})
ENV_VAR = obj({"name": STRING, "value": STRING, "valueFrom": ANY_OBJECT}, required=("name",))
CONTAINER_PORT = obj({"containerPort": INTEGER, "name": STRING, "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                      "hostIP": STRING, "hostPort": INTEGER}, required=("containerPort",))
VOLUME_MOUNT = obj({"name": STRING, "mountPath": STRING, "readOnly": BOOLEAN, "subPath": STRING,
                    "subPathExpr": STRING, "mountPropagation": STRING, "recursiveReadOnly": STRING},
                   required=("mountPath", "name"))
PROBE = {"type": "object"}
CONTAINER = obj({
    "name": STRING, "image": STRING, "command": array(STRING), "args": array(STRING), "workingDir": STRING,
    "env": array(ENV_VAR), "envFrom": array(ANY_OBJECT), "ports": array(CONTAINER_PORT), "resources": RESOURCES,
    "volumeMounts": array(VOLUME_MOUNT), "volumeDevices": array(ANY_OBJECT),
    "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]}, "securityContext": ANY_OBJECT,
    "livenessProbe": PROBE, "readinessProbe": PROBE, "startupProbe": PROBE, "lifecycle": ANY_OBJECT,
    "resizePolicy": array(ANY_OBJECT), "restartPolicy": STRING, "stdin": BOOLEAN, "stdinOnce": BOOLEAN,
    "tty": BOOLEAN, "terminationMessagePath": STRING, "terminationMessagePolicy": STRING,
}, required=("name",))
VOLUME = {"type": "object", "properties": {"name": STRING}, "required": ["name"]}  # one source of many kinds
TOLERATION = obj({"key": STRING, "operator": {"enum": ["Exists", "Equal"]}, "value": STRING,
                  "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
                  "tolerationSeconds": INTEGER})
POD_SPEC = obj({
    "containers": {**array(CONTAINER), "minItems": 1}, "initContainers": array(CONTAINER),
    "volumes": array(VOLUME), "tolerations": array(TOLERATION), "nodeSelector": STRING_MAP,
    "affinity": ANY_OBJECT, "serviceAccountName": STRING, "securityContext": ANY_OBJECT,
    "imagePullSecrets": array(obj({"name": STRING})), "priorityClassName": STRING, "restartPolicy": STRING,
    "terminationGracePeriodSeconds": INTEGER, "runtimeClassName": STRING, "schedulerName": STRING,
    "hostNetwork": BOOLEAN, "dnsPolicy": STRING, "enableServiceLinks": BOOLEAN,
    "automountServiceAccountToken": BOOLEAN, "topologySpreadConstraints": array(ANY_OBJECT),
    "activeDeadlineSeconds": INTEGER, "shareProcessNamespace": BOOLEAN,
}, required=("containers",))
POD_TEMPLATE = obj({"metadata": TEMPLATE_META, "spec": POD_SPEC})

# --- KubeRay ray.io/v1 ---------------------------------------------------------------------------
HEAD_GROUP_SPEC = obj({
    "template": POD_TEMPLATE, "rayStartParams": STRING_MAP, "serviceType": STRING,
    "headService": ANY_OBJECT, "enableIngress": BOOLEAN,
}, required=("rayStartParams", "template"))
WORKER_GROUP_SPEC = obj({
    "groupName": STRING, "replicas": INTEGER, "minReplicas": INTEGER, "maxReplicas": INTEGER,
    "idleTimeoutSeconds": INTEGER, "rayStartParams": STRING_MAP, "template": POD_TEMPLATE,
    "scaleStrategy": obj({"workersToDelete": array(STRING)}), "numOfHosts": INTEGER, "suspend": BOOLEAN,
}, required=("groupName", "maxReplicas", "minReplicas", "rayStartParams", "template"))
AUTOSCALER_OPTIONS = obj({
    "idleTimeoutSeconds": INTEGER, "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
    "image": STRING, "imagePullPolicy": STRING, "resources": RESOURCES, "env": array(ENV_VAR),
    "envFrom": array(ANY_OBJECT), "securityContext": ANY_OBJECT, "volumeMounts": array(VOLUME_MOUNT),
})
RAY_CLUSTER_SPEC = obj({
    "headGroupSpec": HEAD_GROUP_SPEC, "workerGroupSpecs": array(WORKER_GROUP_SPEC), "rayVersion": STRING,
    "enableInTreeAutoscaling": BOOLEAN, "autoscalerOptions": AUTOSCALER_OPTIONS,
    "headServiceAnnotations": STRING_MAP, "suspend": BOOLEAN, "managedBy": STRING,
    "gcsFaultToleranceOptions": ANY_OBJECT,
}, required=("headGroupSpec",))
RAY_JOB_SPEC = obj({
    "entrypoint": STRING, "runtimeEnvYAML": STRING, "runtimeEnv": STRING, "jobId": STRING,
    "rayClusterSpec": RAY_CLUSTER_SPEC, "clusterSelector": STRING_MAP, "metadata": STRING_MAP,
    "shutdownAfterJobFinishes": BOOLEAN, "ttlSecondsAfterFinished": INTEGER, "activeDeadlineSeconds": INTEGER,
    "backoffLimit": INTEGER, "suspend": BOOLEAN, "submitterPodTemplate": POD_TEMPLATE,
    "submitterConfig": obj({"backoffLimit": INTEGER}), "managedBy": STRING,
    "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
    "deletionPolicy": {"enum": ["DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"]},
    "entrypointNumCpus": NUMBER, "entrypointNumGpus": NUMBER, "entrypointResources": STRING,
})


def top_level(api_version: str, kind: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    properties = {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": OBJECT_META}
    if spec is not None:
        properties["spec"] = spec
    return obj(properties, required=("apiVersion", "kind", "metadata", *(["spec"] if spec else [])))


RAY_CLUSTER = top_level("ray.io/v1", "RayCluster", RAY_CLUSTER_SPEC)
RAY_JOB = top_level("ray.io/v1", "RayJob", RAY_JOB_SPEC)

# --- Kubernetes apps/v1 and core/v1 --------------------------------------------------------------
DEPLOYMENT = top_level("apps/v1", "Deployment", obj({
    "replicas": INTEGER, "selector": obj({"matchLabels": STRING_MAP, "matchExpressions": array(ANY_OBJECT)}),
    "template": POD_TEMPLATE, "strategy": obj({"type": {"enum": ["Recreate", "RollingUpdate"]},
                                               "rollingUpdate": ANY_OBJECT}),
    "revisionHistoryLimit": INTEGER, "minReadySeconds": INTEGER, "progressDeadlineSeconds": INTEGER,
}, required=("selector", "template")))
SERVICE = top_level("v1", "Service", obj({
    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]}, "selector": STRING_MAP,
    "ports": array(obj({"port": INTEGER, "targetPort": INT_OR_STRING, "name": STRING, "nodePort": INTEGER,
                        "protocol": {"enum": ["TCP", "UDP", "SCTP"]}, "appProtocol": STRING}, required=("port",))),
    "clusterIP": STRING, "sessionAffinity": STRING,
}))
PERSISTENT_VOLUME_CLAIM = top_level("v1", "PersistentVolumeClaim", obj({
    "accessModes": array({"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]}),
    "resources": obj({"requests": obj({"storage": QUANTITY}, required=("storage",)),
                      "limits": {"type": "object", "additionalProperties": QUANTITY}}),
    "storageClassName": STRING, "volumeMode": STRING,
}, required=("accessModes", "resources")))
NAMESPACE = top_level("v1", "Namespace", None)
SERVICE_ACCOUNT = top_level("v1", "ServiceAccount", None)

BY_KIND = {"RayCluster": RAY_CLUSTER, "RayJob": RAY_JOB, "Deployment": DEPLOYMENT, "Service": SERVICE,
           "PersistentVolumeClaim": PERSISTENT_VOLUME_CLAIM, "Namespace": NAMESPACE,
           "ServiceAccount": SERVICE_ACCOUNT}
