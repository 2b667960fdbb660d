"""The Kubernetes route, checked as far as it can be without a cluster (none is available here).

- ``deploy/k8s/dagster.yaml`` passes Dagster's instance schema, and each configurable class in it
  (the K8sRunLauncher, the queued run coordinator, PostgreSQL storage) accepts its section, which
  is the check the instance makes before it constructs them.
- The code location ``manga_assets.defs.k8s_location`` resolves its executor's config through
  Dagster's run-config validation.
- The pod that dagster-k8s would build for each step, from the launcher's settings, the
  executor's default step settings and the step's op tags, puts the training steps and only
  them on a GPU node with a GPU.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from manga_assets.defs.constants import GPU_STEP_TAGS, VARIANTS

pytest.importorskip("dagster_k8s", reason='pip install -e ".[dev]" (dagster-k8s)')

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
PG_ENV = {
    "DAGSTER_PG_HOST": "postgres.example",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-secret",
}
GPU = "nvidia.com/gpu"


def validated_against(config_type, config: dict) -> dict:
    """``config`` after Dagster's validation against ``config_type`` (defaults filled in)."""
    from dagster._config import process_config, resolve_to_config_type

    result = process_config(resolve_to_config_type(config_type), config)
    assert result.success, [error.message for error in result.errors]
    return result.value


def validated(klass: type, config: dict) -> dict:
    """``config`` as the configurable ``klass`` receives it; what the instance checks first."""
    return validated_against(klass.config_type(), config)


@pytest.fixture(scope="module")
def instance_config() -> dict:
    from dagster._core.instance.config import dagster_instance_config

    with pytest.MonkeyPatch.context() as patch:
        for name, value in PG_ENV.items():
            patch.setenv(name, value)
        config, custom_instance_class = dagster_instance_config(str(K8S))
    assert custom_instance_class is None
    return config


@pytest.fixture(scope="module")
def launcher(instance_config) -> dict:
    from dagster_k8s import K8sRunLauncher

    section = instance_config["run_launcher"]
    assert (section["module"], section["class"]) == ("dagster_k8s", "K8sRunLauncher")
    return validated(K8sRunLauncher, section["config"])


@pytest.fixture(scope="module")
def k8s_defs() -> dg.Definitions:
    from manga_assets.defs.k8s_location import defs

    return defs


def test_k8s_instance_config_passes_dagsters_validation(instance_config, launcher, monkeypatch):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import DagsterPostgresStorage

    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    storage = validated(DagsterPostgresStorage, instance_config["storage"]["postgres"])
    assert storage["postgres_db"]["password"] == PG_ENV["DAGSTER_PG_PASSWORD"]  # from the env
    coordinator = instance_config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    validated(QueuedRunCoordinator, coordinator.get("config") or {})
    # Every run pod mounts the shared data volume where MANGA_DATA_DIR points.
    env_map = next(
        doc
        for doc in yaml.safe_load_all((K8S / "manga-assets-env.yaml").read_text())
        if doc["kind"] == "ConfigMap"
    )
    assert launcher["env_config_maps"] == [env_map["metadata"]["name"]]
    (mount,) = launcher["volume_mounts"]
    assert mount["mountPath"] == env_map["data"]["MANGA_DATA_DIR"]
    assert launcher["instance_config_map"] == "dagster-instance"


def test_k8s_executor_config_resolves_in_every_job(k8s_defs):
    for job_name in ("acquisition_job", "models_job", "latents_job", "plates_job"):
        job = k8s_defs.resolve_job_def(job_name)
        assert job.executor_def.name == "k8s_steps"
        execution = dg.validate_run_config(job, {})["execution"]["k8s_steps"]
        assert execution["max_concurrent"] == 8


def step_pod(launcher: dict, executor_config: dict, op_tags: dict[str, str]):
    """The Kubernetes Job that dagster-k8s builds for a step with ``op_tags``.

    Merges as ``K8sStepHandler`` does: the executor's step settings, then the step's
    ``dagster-k8s/config`` tag, over the launcher's container settings.
    """
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    context = K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config["step_k8s_config"])
    ).merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op_tags)))
    job_config = DagsterK8sJobConfig(
        job_image="registry.example/manga-assets:test",
        dagster_home=launcher["dagster_home"],
        instance_config_map=launcher["instance_config_map"],
        postgres_password_secret=launcher["postgres_password_secret"],
        env_config_maps=launcher["env_config_maps"],
        env_secrets=launcher["env_secrets"],
        volume_mounts=launcher["volume_mounts"],
        volumes=launcher["volumes"],
    )
    return construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-test",
        user_defined_k8s_config=context.run_k8s_config,
        component="step_worker",
    )


def test_only_the_model_steps_get_a_gpu_node(launcher, k8s_defs):
    from manga_assets.defs.k8s_location import K8S_EXECUTOR_CONFIG

    gpu_config = GPU_STEP_TAGS["dagster-k8s/config"]
    executor_config = validated_executor_config()
    model_ops = {f"{variant}__model" for variant in VARIANTS}
    seen = set()
    for job_name in ("models_job", "acquisition_job", "latents_job"):
        for node in k8s_defs.resolve_job_def(job_name).graph.nodes:
            tags = dict(node.tags)
            pod = step_pod(launcher, executor_config, tags).spec.template.spec
            (container,) = pod.containers
            resources = container.resources
            if node.name in model_ops:
                seen.add(node.name)
                assert pod.node_selector == gpu_config["pod_spec_config"]["node_selector"]
                assert {t.key for t in pod.tolerations} == {GPU}
                assert resources.limits[GPU] == resources.requests[GPU] == "1"
                # The tag's requests replace the executor's CPU-step default.
                assert resources.requests["cpu"] == "4"
            else:
                assert not pod.node_selector and not pod.tolerations, node.name
                assert GPU not in (resources.limits or {}), node.name
                assert (
                    resources.requests
                    == (
                        K8S_EXECUTOR_CONFIG["step_k8s_config"]["container_config"]["resources"][
                            "requests"
                        ]
                    )
                )
            # Every step pod mounts the shared products and takes the deployment's settings.
            assert [m.mount_path for m in container.volume_mounts] == ["/data"]
            assert [e.config_map_ref.name for e in container.env_from if e.config_map_ref] == [
                "manga-assets-env"
            ]
    assert seen == model_ops


def validated_executor_config() -> dict:
    """The k8s_location executor's settings, validated against k8s_job_executor's schema."""
    from dagster_k8s import k8s_job_executor

    from manga_assets.defs.k8s_location import K8S_EXECUTOR_CONFIG

    return validated_against(k8s_job_executor.config_schema.config_type, K8S_EXECUTOR_CONFIG)


def assert_unprivileged(pod, where: str) -> None:
    """A pod that runs as a non-root user and whose containers cannot gain privileges."""
    context = pod.security_context
    assert context is not None and context.run_as_non_root, where
    assert context.run_as_user and context.run_as_user > 0, where
    assert context.seccomp_profile.type == "RuntimeDefault", where
    for container in pod.containers:
        own = container.security_context
        assert own is not None and own.allow_privilege_escalation is False, where
        assert not own.privileged and own.capabilities.drop == ["ALL"], where


def test_every_run_and_step_pod_runs_unprivileged(launcher, k8s_defs):
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
    )

    executor_config = validated_executor_config()
    for job_name in ("models_job", "acquisition_job"):
        for node in k8s_defs.resolve_job_def(job_name).graph.nodes:
            pod = step_pod(launcher, executor_config, dict(node.tags)).spec.template.spec
            assert_unprivileged(pod, node.name)
    run_job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(
            job_image="registry.example/manga-assets:test",
            dagster_home=launcher["dagster_home"],
            instance_config_map=launcher["instance_config_map"],
        ),
        args=["dagster", "api", "execute_run"],
        job_name="dagster-run-test",
        user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            launcher["run_k8s_config"]
        ),
        component="run_worker",
    )
    assert_unprivileged(run_job.spec.template.spec, "run pod")


def test_the_instance_database_is_reached_over_verified_tls():
    env_map = next(
        doc
        for doc in yaml.safe_load_all((K8S / "manga-assets-env.yaml").read_text())
        if doc["kind"] == "ConfigMap"
    )
    assert env_map["data"]["PGSSLMODE"] == "verify-full"
