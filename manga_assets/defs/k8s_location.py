"""The code location with every step in its own Kubernetes pod (deploy/README.md, "Kubernetes").

Serve it in the cluster with ``dagster code-server start -m manga_assets.defs.k8s_location`` and
launch runs through the instance of ``deploy/k8s/dagster.yaml`` (K8sRunLauncher). The executor
takes the image, namespace, volumes and environment of its step pods from that launcher; the
training steps ask for a GPU node through their op tags (``GPU_STEP_TAGS``).
``manga_assets.definitions`` never imports this module, so only a Kubernetes deployment imports
dagster-k8s and the Kubernetes client.
"""

from __future__ import annotations

from typing import Any

from dagster_k8s import k8s_job_executor

from manga_assets.defs.definitions import build_definitions

# Every pod runs as an unprivileged user (the image must have uid 1000, see deploy/README.md)
# with no way to gain privileges: a step parses files from the internet, so a flaw in a parser
# must not become root on the node. The same settings are in deploy/k8s/dagster.yaml for run pods.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "run_as_non_root": True,
    "run_as_user": 1000,
    "run_as_group": 1000,
    "fs_group": 1000,
    "seccomp_profile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allow_privilege_escalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
}

K8S_EXECUTOR_CONFIG: dict[str, Any] = {
    # Pods of one run at a time; the sas_download pool (deploy/k8s/dagster.yaml) still caps the
    # download steps of all runs together.
    "max_concurrent": 8,
    # The pod of a step without settings of its own (downloads, extraction, inference,
    # analyses). The training steps' op tags are merged over this.
    "step_k8s_config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "1", "memory": "4Gi"},
                "limits": {"memory": "8Gi"},
            },
            "security_context": CONTAINER_SECURITY_CONTEXT,
        },
        "pod_spec_config": {"security_context": POD_SECURITY_CONTEXT},
    },
}

k8s_steps = k8s_job_executor.configured(K8S_EXECUTOR_CONFIG, name="k8s_steps")

defs = build_definitions(executor=k8s_steps)
