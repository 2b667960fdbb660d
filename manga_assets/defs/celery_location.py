"""The code location with every step on a Celery worker (deploy/README.md, "Celery").

Load it with ``-m manga_assets.defs.celery_location`` (``dagster job execute``, ``dagster dev``,
a workspace), or launch a job from Python through :func:`celery_job`, and start the workers
with ``deploy/celery.yaml``. ``manga_assets.definitions``
never imports this module, so the default code location does not import Celery.

Broker and result backend come from ``DAGSTER_CELERY_BROKER_URL`` and
``DAGSTER_CELERY_BACKEND_URL`` when a run starts (they may hold a password, so they are never in
a file or in the UI's run config).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_celery import celery_executor

from manga_assets.defs.definitions import build_definitions

# A step whose worker dies must run again, not vanish. By default Celery acknowledges a task when
# a worker takes it, so a worker killed mid-step loses the task and the run waits for its result
# for ever. Acknowledging late, and requeueing when the step's process dies, hands the step to
# another worker: at once when only the step's process died (the worker requeues it), after
# ``visibility_timeout`` when the whole worker died (Redis gives unacknowledged tasks back). That
# timeout must exceed the longest step (training), or a step still running is started twice.
# Running a step twice is safe: every product is published by an atomic rename and records what
# it was made from (manga_assets.atomic, manga_assets.provenance).
# Keep deploy/celery.yaml, which configures the workers, equal to this (a test compares them).
CELERY_EXECUTOR_CONFIG: dict[str, Any] = {
    "broker": {"env": "DAGSTER_CELERY_BROKER_URL"},
    "backend": {"env": "DAGSTER_CELERY_BACKEND_URL"},
    "config_source": {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "broker_transport_options": {
            "visibility_timeout": 21600,
            # How often a worker looks for tasks of dead workers to give back (seconds).
            "unacked_restore_interval": 60,
            "unacked_restore_throttle": 1,
            # dagster-celery's own connection retry settings, kept.
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    },
}

celery_steps = celery_executor.configured(CELERY_EXECUTOR_CONFIG, name="celery_steps")

defs = build_definitions(executor=celery_steps)


def celery_job(name: str) -> dg.JobDefinition:
    """Job ``name`` of this code location.

    For launching from Python: ``dg.execute_job(dg.build_reconstructable_job(
    "manga_assets.defs.celery_location", "celery_job", ("latents_job",)), instance)``; each worker
    rebuilds the job by calling this function.
    """
    return defs.resolve_job_def(name)
