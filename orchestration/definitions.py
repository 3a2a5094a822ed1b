"""The Dagster code location: one ``defs()`` per domain, merged with the resources.

Loaded by ``workspace.yaml``.  Settings are read when Dagster loads the definitions
(not at import), so the same code runs against the local platform or production
depending on ``PLANTSTREAM_*`` variables.
"""

from __future__ import annotations

import dagster as dg

from plantstream.assets import cold, gold, predictive_maintenance, silver, stream_outputs, warm
from plantstream.orchestration import automation, retraining
from plantstream.orchestration.jobs import defs as jobs_defs
from plantstream.orchestration.resources import build_resources
from plantstream.quality_checks import checks as quality
from plantstream.settings import load_settings

DOMAINS = (stream_outputs.defs, silver.defs, gold.defs, warm.defs, jobs_defs, cold.defs, automation.defs, quality.defs)
DOMAINS += (predictive_maintenance.defs, retraining.defs)


def build_definitions(settings=None) -> dg.Definitions:
    settings = load_settings() if settings is None else settings
    return dg.Definitions.merge(*(domain() for domain in DOMAINS), dg.Definitions(resources=build_resources(settings)))


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
