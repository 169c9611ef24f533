"""The agent's SPIFFE side (issue 21 item 3), run beside its files as a ``Sidecar``: the
``SvidKeeper`` fed by keyless's SVID API, the Workload API on ``--workload-api PATH`` and the
PEM files in ``--svid-dir DIR``. Prints ``keyless agent spiffe ready: SPIFFE_ID`` once the first
X.509-SVID is served.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from keyless.agent.auth import KeylessAuth
from keyless.agent.runtime import Sidecar
from keyless.agent.spiffe_client import KeylessSvids, SvidIssuer
from keyless.agent.spiffe_svids import SvidKeeper


async def run_spiffe(
    issuer: SvidIssuer,
    stop: asyncio.Event,
    *,
    workload_api: Path | None,
    svid_dir: Path | None,
) -> None:
    from keyless.agent.spiffe_api import serve_workload_api
    from keyless.agent.spiffe_files import keep_files

    keeper = SvidKeeper(issuer)
    jobs = [keeper.run(stop), _announce(keeper, stop)]
    if workload_api is not None:
        jobs.append(serve_workload_api(keeper, workload_api, stop))
    if svid_dir is not None:
        jobs.append(keep_files(keeper, svid_dir, stop))
    await asyncio.gather(*jobs)


async def _announce(keeper: SvidKeeper, stop: asyncio.Event) -> None:
    version = 0
    while not stop.is_set():
        change = asyncio.ensure_future(keeper.state.after(version))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({change, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not change.done():
            change.cancel()
            return
        version, identity = change.result()
        if identity.svid is not None:
            print(f"keyless agent spiffe ready: {identity.svid.spiffe_id}", flush=True)
            return


def spiffe_sidecar(*, workload_api: Path | None, svid_dir: Path | None) -> Sidecar:
    async def side(auth: KeylessAuth, stop: asyncio.Event) -> None:
        await run_spiffe(KeylessSvids(auth), stop, workload_api=workload_api, svid_dir=svid_dir)

    return side
