"""The write gate: a downstream asset refuses to write while a blocking check of its inputs has failed.

Dagster's ``blocking=True`` only orders steps inside one run: when a blocking check fails,
the downstream steps *of that run* are skipped.  A run that materialises the downstream
asset alone (the UI's "Materialize", a backfill, an automation condition without
``all_deps_blocking_checks_passed``) would still write it.  So the assets downstream of
checked tables (gold after silver, warm after gold, training after features) call
:func:`refuse_unless_inputs_passed` before they write anything:

* for every upstream asset of the step, and every upstream partition its partition
  mapping reads for the run's partitions (gold day D reads silver days D-1 .. D+1),
* for every *blocking* check the code location defines on that upstream asset,
* the check's latest completed evaluation of that partition decides: failed with ERROR
  severity -> :class:`dagster.Failure` naming the check, the partition and why, and
  nothing is written.

An evaluation of a range (one check step over several days: a single-run backfill) is
recorded by Dagster without a partition; its metadata ``failed_days`` says which days
failed, and the gate reads it for the days the range planned.

A partition that no check has evaluated yet does not stop the write (the gate reports it
in the log as unchecked): runs of the ``gold_refresh`` job evaluate the silver checks of
their days first, and a test or a tool that materialises gold without the checks is not
broken by them.  A latest evaluation that failed stops the write even if the data
changed since: run the check again (it is quick) to clear it.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

# Dagster exports no API for check history by partition; these two are what its own UI uses.
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

#: Evaluations read back per check when a range run has to be looked up.
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class Verdict:
    check: dg.AssetCheckKey
    partition: str | None
    status: str  # passed | failed | unchecked
    run_id: str | None = None
    description: str | None = None


def _upstream_partitions(
    context: dg.AssetExecutionContext, graph, key: dg.AssetKey, parent: dg.AssetKey
) -> list[str | None]:
    parent_partitions = graph.get(parent).partitions_def
    if parent_partitions is None:
        return [None]
    own = graph.get(key).partitions_def
    if own is None:
        return list(parent_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    mapping = context.assets_def.get_partition_mapping(parent) or dg.IdentityPartitionMapping()
    subset = own.subset_with_partition_keys(context.partition_keys)
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        subset, own, parent_partitions, dynamic_partitions_store=context.instance
    )
    return sorted(result.partitions_subset.get_partition_keys())


def _range_verdict(instance: dg.DagsterInstance, check: dg.AssetCheckKey, partition: str, run_id: str) -> Verdict:
    """The verdict on ``partition`` of the range evaluation a run made (no partition on the record)."""
    for record in instance.event_log_storage.get_asset_check_execution_history(check, limit=HISTORY_LIMIT):
        if record.run_id != run_id or record.event is None or record.event.asset_check_evaluation is None:
            continue
        evaluation = record.event.asset_check_evaluation
        failed_days = evaluation.metadata.get("failed_days")
        failed = partition in (failed_days.value if failed_days is not None else [])
        if not evaluation.passed and failed_days is None:
            failed = True  # a range evaluation that does not say which days: all of them
        blocking = evaluation.severity == dg.AssetCheckSeverity.ERROR
        return Verdict(check, partition, "failed" if failed and blocking else "passed", run_id, evaluation.description)
    return Verdict(check, partition, "unchecked", run_id)


def _location_graph(context: dg.AssetExecutionContext):  # -> AssetGraph (not exported by dagster)
    """The asset graph of the whole code location, checks included.

    ``context.repository_def`` is None when a job runs in process (``dg.materialize``,
    ``execute_in_process``), and the job's own graph holds only the checks the job
    selected: a run of gold alone would see no silver check.  A job resolved from
    :class:`dagster.Definitions` keeps the graph it was cut from (``source_asset_graph``);
    ``dg.materialize`` over bare assets has no checks at all, so the gate lets it write.
    """
    return context.job_def.asset_layer.asset_graph.source_asset_graph


def input_verdicts(context: dg.AssetExecutionContext) -> list[Verdict]:
    """The latest verdict of every blocking check on every upstream partition this step reads."""
    graph = _location_graph(context)
    instance = context.instance
    verdicts: list[Verdict] = []
    for key in sorted(context.selected_asset_keys, key=str):
        for parent in sorted(context.assets_def.asset_deps.get(key, set()), key=str):
            if not graph.has(parent):
                continue
            checks = sorted(
                (c for c in graph.get_check_keys_for_assets({parent}) if graph.get_check_spec(c).blocking), key=str
            )
            if not checks:
                continue
            partitions = _upstream_partitions(context, graph, key, parent)
            for check in checks:
                verdicts += _check_verdicts(instance, check, partitions)
    return verdicts


def _check_verdicts(
    instance: dg.DagsterInstance, check: dg.AssetCheckKey, partitions: list[str | None]
) -> list[Verdict]:
    if partitions == [None]:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check]).get(check)
        return [_record_verdict(check, None, record)]
    infos = {
        info.partition_key: info
        for info in instance.event_log_storage.get_asset_check_partition_info([check], partition_keys=partitions)
    }
    out = []
    for partition in partitions:
        info = infos.get(partition)
        if info is None:
            out.append(Verdict(check, partition, "unchecked"))
        elif info.latest_execution_status is AssetCheckExecutionRecordStatus.PLANNED:
            out.append(_range_verdict(instance, check, partition, info.latest_planned_run_id))
        else:
            history = instance.event_log_storage.get_asset_check_execution_history(
                check, limit=1, partition_filter=PartitionKeyFilter(key=partition)
            )
            out.append(_record_verdict(check, partition, history[0] if history else None))
    return out


def _record_verdict(check: dg.AssetCheckKey, partition: str | None, record) -> Verdict:
    if record is None or record.event is None or record.event.asset_check_evaluation is None:
        return Verdict(check, partition, "unchecked")
    evaluation = record.event.asset_check_evaluation
    failed = not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    return Verdict(check, partition, "failed" if failed else "passed", record.run_id, evaluation.description)


def refuse_unless_inputs_passed(context: dg.AssetExecutionContext) -> list[Verdict]:
    """Raise :class:`dagster.Failure` (before anything is written) if a blocking input check failed."""
    verdicts = input_verdicts(context)
    failed = [v for v in verdicts if v.status == "failed"]
    unchecked = [v for v in verdicts if v.status == "unchecked"]
    if failed:
        lines = [
            f"{v.check.asset_key.to_user_string()} [{v.partition or 'unpartitioned'}] check `{v.check.name}` failed "
            f"(run {v.run_id}): {v.description or ''}"[:400]
            for v in failed
        ]
        raise dg.Failure(
            description="Not written: blocking data-quality checks of the inputs failed. Fix the data and run the "
            "checks again.\n" + "\n".join(lines[:20]),
            metadata={
                "failed_checks": dg.MetadataValue.json(
                    [
                        {"asset": v.check.asset_key.to_user_string(), "check": v.check.name, "partition": v.partition}
                        for v in failed
                    ]
                ),
            },
            allow_retries=False,
        )
    if verdicts:
        context.log.info(
            f"quality gate: {len(verdicts) - len(unchecked)} input check(s) passed, {len(unchecked)} not evaluated yet"
            + (f" (e.g. {unchecked[0].check.to_user_string()} [{unchecked[0].partition}])" if unchecked else "")
        )
    return verdicts
