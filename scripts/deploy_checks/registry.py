"""Every check, in the order they run. Each declares what it needs from earlier ones."""

from __future__ import annotations

from . import compose, image, k8s, live, monitoring, prometheus
from .framework import Check, Options


def all_checks(options: Options) -> list[Check]:
    return [
        *image.CHECKS[:4],  # hadolint, shellcheck, dockerfile, dockerignore
        *compose.CHECKS,
        *k8s.CHECKS,
        *image.CHECKS[4:],  # the runtime layouts
        *monitoring.CHECKS,
        *live.checks(metrics_file=options.metrics_file is not None),
        *prometheus.CHECKS,
    ]
