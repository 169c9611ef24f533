"""keyless's benchmarks, one package: ``python -m bench STUDY [options]`` from the repo root.

Studies (one module each): ``openbao`` (keyless vs OpenBao, ``make bench``), ``exchange``
(token exchange with 100k trust policies), ``read`` (secret reads with 100k secrets), ``soak``
(mixed load for minutes, ``make soak``), ``stack`` (what one keep-alive TLS request costs per
HTTP server and layer; its servers are in ``stackapps``), ``memory`` (RSS per process
through 200,000 logins and reads, and where it goes). Shared: ``loadgen`` (the load
generator), ``server`` (starting, setting up and stopping keyless), ``peer`` (OpenBao),
``report`` (running a study, JSON results, the versions line). ``python -m bench render
STUDY`` re-renders ``bench/results/STUDY.md`` from ``bench/results/STUDY.json`` without
re-running.
"""
