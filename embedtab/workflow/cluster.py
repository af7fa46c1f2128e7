"""Where fit-workflow and transform run: in this process, or on an existing Dask cluster.

The cluster is named by the `dask_scheduler` option or, as for Dask itself, by the
DASK_SCHEDULER_ADDRESS environment variable; Merlin is told to use its client for the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from embedtab.bounds import scheduler_from_environment
from embedtab.errors import UsageError
from embedtab.reporting import Reporter

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"  # the variable Dask itself reads for `scheduler-address`


@contextlib.contextmanager
def dask_cluster(address: str | None, reporter: Reporter) -> Iterator[str]:
    """Run on an existing Dask cluster when an address is given (option or DASK_SCHEDULER_ADDRESS)."""
    address = address or scheduler_from_environment(SCHEDULER_ENV)
    if not address:
        yield "local"
        return
    from distributed import Client
    from merlin.core.utils import set_dask_client

    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {address} ({exc}); start one or drop --dask-scheduler") from None
    reporter.info(f"running on the Dask cluster at {address} ({len(client.scheduler_info()['workers'])} workers)")
    set_dask_client(client)
    try:
        yield address
    finally:
        set_dask_client(None)
        client.close()
