"""The one way every stage goes from its plans to its published artifacts.

    plan      `Driver.plan`: the store's up-to-date decision, in this run's mode (a dry run keeps
              each verdict; a make-like run rebuilds what its inputs changed). Input artifacts are
              verified here, so nothing is called up to date over a damaged input.
    lock      `Driver.build`: the build lock of the artifact (a second identical run waits and gets
              what the first made); runs that meet in a work folder instead (sharded encode jobs)
              publish under the store lock after checking nobody published the same meanwhile.
    build     the stage's `make` writes each artifact into its own staging folder and says what to
              record (`Made`); nothing it wrote is visible yet.
    publish   every artifact of the build together, or none (the store's commit, recovered after a
              crash); a later artifact of one build records the earlier ones as its inputs.

A stage declares only what differs: its plans and its `make`. The run mode is the driver's
argument (`embedtab run` and `--dry-run` pass it), never a switch on the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtab.artifacts.manifest import ArtifactRecord
from embedtab.artifacts.plan import DryRunStop, Plan, RunMode

if TYPE_CHECKING:
    from embedtab.artifacts.store import ArtifactStore


@dataclass
class Made:
    """What a stage's `make` wrote into one staging folder: what its record is to hold."""

    metadata: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    device: str = "cpu"


@dataclass
class Built:
    """The records of a build, in the order of its plans, and whether they were already there.
    Not `finished`: the stage's long work is not all done (no records; see `Driver.build`)."""

    records: list[ArtifactRecord]
    up_to_date: bool
    finished: bool = True

    @property
    def record(self) -> ArtifactRecord:
        """The main artifact: the last plan's (reduce: the embeddings, after the projection)."""
        return self.records[-1]


Make = Callable[[list[Path]], Sequence[Made]]


class Driver:
    """Plans and builds of one run over one store, in one mode (see the module docstring)."""

    def __init__(self, store: ArtifactStore, mode: RunMode | None = None):
        self.store = store
        self.mode = mode if mode is not None else RunMode()

    def plan(self, kind: str, name: str, stage: str, params: dict[str, Any], **request: Any) -> Plan:
        """`ArtifactStore.plan` (whose docstring says what each request field means) in this run's mode."""
        return self.store.plan(kind, name, stage, params, mode=self.mode, **request)

    def build(self, plans: Sequence[Plan], make: Make, *, work: Callable[[], bool] | None = None, wait: bool = True) -> Built:
        """The existing records when every plan is up to date; else `make` run in staging and its
        artifacts published together.

        `work`: a long phase kept outside staging (encode's resumable shards), run first; False
        means it is not all done here, and nothing is published. `wait=False`: no build lock (see
        the module docstring)."""
        plans = list(plans)
        if all(plan.up_to_date for plan in plans):
            return Built([plan.up_to_date_record() for plan in plans], True)
        if self.mode.dry_run:
            raise DryRunStop(next(plan for plan in plans if not plan.up_to_date))
        if not wait:
            if work is not None and not work():
                return Built([], False, finished=False)
            with self.store.lock():  # re-entrant: the commit inside takes it again
                now = [self.store.get(plan.kind, plan.name) for plan in plans]
                if all(self.store.current(record, plan.input_fingerprint) for record, plan in zip(now, plans)):
                    return Built([record for record in now if record is not None], True)
                return self._make_and_publish(plans, make)
        with self.store.building(plans[-1]) as made:
            if made is not None:  # an identical run made it while this one waited
                return Built([*(self.store.require(plan.kind, plan.name) for plan in plans[:-1]), made], True)
            if work is not None and not work():
                return Built([], False, finished=False)
            return self._make_and_publish(plans, make)

    def _make_and_publish(self, plans: list[Plan], make: Make) -> Built:
        with contextlib.ExitStack() as stack:
            stagings = [stack.enter_context(self.store.staging(plan)) for plan in plans]
            outputs = list(make(stagings))
            if len(outputs) != len(plans):
                raise RuntimeError(f"a build of {len(plans)} artifact(s) made {len(outputs)}")
            records: list[ArtifactRecord] = []
            for plan, staging, made in zip(plans, stagings, outputs):
                # Made together: a later artifact depends on the earlier ones (reduce's vectors on
                # its projection), recorded so that `status` can tell when it is stale.
                plan.inputs["artifacts"].extend({"kind": r.kind, "name": r.name, "fingerprint": r.fingerprint} for r in records)
                records.append(self.store.prepare(plan, staging, made.metadata, made.summary, made.device))
            self.store.commit(list(zip(records, stagings)))
        return Built(records, False)
