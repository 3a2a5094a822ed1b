"""Great Expectations 1.x at run time: one in-memory context per process, Data Docs on disk.

The context is ephemeral (suites, validation definitions and checkpoints live in memory,
rebuilt from :mod:`plantstream.quality_checks.suites` at every validation) except for two
things that must outlive the process:

* the **validation results store**, a folder under the state directory
  (``<state_dir>/quality/gx/results``), so the Data Docs index lists every validation of
  every process (Dagster runs each check step in a process of its own);
* the **Data Docs site** (``<state_dir>/quality/data_docs``): every validation renders its
  page there (``UpdateDataDocsAction``); the check's metadata links to the page.

Great Expectations is imported here and only here, on first use (≈ 3.5 s, 270 MB).
Analytics and progress bars are off through the context's own configuration.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plantstream.quality_checks.expectations import SAMPLE_ROWS, Batch, Rule

SITE = "plantstream"
DATASOURCE = "plantstream_lake"
#: The newest validations the Data Docs index lists (older pages stay on disk).
INDEX_LIMIT = 500
#: Per (context root, GX suite name): the rules it was built from and its checkpoint (rebuilt when they change).
_PREPARED: dict[tuple[str, str], tuple[str, Any]] = {}


def docs_root(state_dir: Path) -> Path:
    return Path(state_dir) / "quality"


@dataclass
class RuleOutcome:
    """One rule's verdict, JSON-ready."""

    rule: Rule
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    element_count: int | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"expectation": self.rule.describe(), "success": self.success}
        for key in ("observed", "unexpected_count", "unexpected_percent", "element_count", "error"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.rule.notes:
            out["notes"] = self.rule.notes
        return out


@dataclass
class BatchOutcome:
    frame: str
    rows: int
    outcomes: list[RuleOutcome]
    #: The validation result's key: :func:`publish` renders its Data Docs page and returns the link.
    identifier: Any
    seconds: float


@cache
def _context(root: str):  # -> great_expectations EphemeralDataContext
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, ProgressBarsConfig

    memory = {"class_name": "InMemoryStoreBackend"}
    config = DataContextConfig(
        stores={
            "expectations_store": {"class_name": "ExpectationsStore", "store_backend": memory},
            "validation_results_store": {
                "class_name": "ValidationResultsStore",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": f"{root}/gx/results"},
            },
            "checkpoint_store": {"class_name": "CheckpointStore", "store_backend": memory},
            "validation_definition_store": {"class_name": "ValidationDefinitionStore", "store_backend": memory},
        },
        expectations_store_name="expectations_store",
        validation_results_store_name="validation_results_store",
        checkpoint_store_name="checkpoint_store",
        data_docs_sites={
            SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "site_index_builder": {
                    "class_name": "DefaultSiteIndexBuilder",
                    "validation_results_limit": INDEX_LIMIT,
                },
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": f"{root}/data_docs"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.data_sources.add_pandas(DATASOURCE)
    return context


def validate(state_dir: Path, suite_name: str, run_name: str, batch: Batch) -> BatchOutcome:
    """Validate ``batch`` as the Great Expectations suite ``<suite_name>.<frame>``; render its Data Docs page."""
    import time

    import great_expectations as gx
    import great_expectations.expectations as gxe

    started = time.perf_counter()
    context = _context(str(docs_root(state_dir)))
    name = f"{suite_name}.{batch.frame}"
    source = context.data_sources.get(DATASOURCE)
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    rules_key = repr([(r.check, r.expectation, r.kwargs, r.notes) for r in batch.rules])
    key = (str(docs_root(state_dir)), name)  # a checkpoint belongs to its context (one per state dir)
    prepared = _PREPARED.get(key)
    if prepared is None or prepared[0] != rules_key:
        batch_definition = next(iter(asset.batch_definitions), None) or asset.add_batch_definition_whole_dataframe(
            "all"
        )
        expectations = []
        for index, rule in enumerate(batch.rules):
            expectation = getattr(gxe, rule.expectation)(**rule.kwargs, meta={"check": rule.check, "rule": index})
            if rule.notes:
                expectation.notes = rule.notes
            expectations.append(expectation)
        # All at once: adding one by one to a suite the store already holds rewrites it each time.
        suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=[],  # Data Docs are rendered once per check step (publish): the index is costly
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS},
            )
        )
        _PREPARED[key] = (rules_key, checkpoint)
    checkpoint = _PREPARED[key][1]
    run_id = gx.RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC))
    result = checkpoint.run(batch_parameters={"dataframe": batch.data}, run_id=run_id)
    ((identifier, validation),) = result.run_results.items()
    by_index = {int(r.expectation_config.meta["rule"]): r for r in validation.results}
    outcomes = [_outcome(rule, by_index.get(i), batch) for i, rule in enumerate(batch.rules)]
    return BatchOutcome(batch.frame, len(batch.data), outcomes, identifier, time.perf_counter() - started)


def publish(state_dir: Path, identifiers: list[Any]) -> dict[Any, str]:
    """Render the Data Docs pages of ``identifiers`` (and the site's index, once); their ``file://`` links.

    Once per check step rather than per validation: the index builder reads the listed
    validation results every time it runs.
    """
    if not identifiers:
        return {}
    context = _context(str(docs_root(state_dir)))
    context.build_data_docs(site_names=[SITE], resource_identifiers=list(identifiers))
    urls = {}
    for identifier in identifiers:
        found = context.get_docs_sites_urls(resource_identifier=identifier, site_names=[SITE])
        if found and found[0].get("site_url"):
            urls[identifier] = found[0]["site_url"]
    return urls


def _outcome(rule: Rule, result, batch: Batch) -> RuleOutcome:  # result: ExpectationValidationResult | None
    if result is None:
        return RuleOutcome(rule, False, error="the expectation produced no result")
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return RuleOutcome(rule, False, error=str(info.get("exception_message"))[:500])
    details = result.result or {}
    sample = _sample(batch, details.get("partial_unexpected_index_list"), details.get("partial_unexpected_list"))
    return RuleOutcome(
        rule,
        bool(result.success),
        observed=_plain(details.get("observed_value")),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=_plain(details.get("unexpected_percent")),
        element_count=details.get("element_count"),
        sample=sample,
    )


def _sample(batch: Batch, indices: list | None, values: list | None) -> list[dict[str, Any]]:
    """The failing rows as dicts (by GX's index list), else GX's failing values."""
    if indices:
        flat = [i for i in indices if not isinstance(i, (list, tuple, dict))][:SAMPLE_ROWS]
        if flat:
            rows = batch.data.loc[[i for i in flat if i in batch.data.index]]
            if batch.sample_columns:
                rows = rows[[c for c in batch.sample_columns if c in rows.columns]]
            return [{k: _plain(v) for k, v in row.items()} for row in rows.to_dict(orient="records")]
    return [{"value": _plain(v)} for v in (values or [])[:SAMPLE_ROWS]]


def _plain(value: Any) -> Any:
    """A JSON-ready value (timestamps as ISO text, NaN as None, numpy scalars as Python)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
