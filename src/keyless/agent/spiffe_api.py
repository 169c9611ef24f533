"""The SPIFFE Workload API (the ``SpiffeWorkloadAPI`` gRPC service, spiffe_proto/workload.proto)
on a Unix socket, served from the agent's ``SvidKeeper``: FetchX509SVID (with the federated
bundles), FetchX509Bundles and FetchJWTBundles stream the current answer and every change (a
renewal, a CA or key published, a federation added); FetchJWTSVID and ValidateJWTSVID answer
once. Every call must carry the metadata ``workload.spiffe.io: true`` (the spec's guard against
a browser or proxy reaching the socket), else INVALID_ARGUMENT, worded as SPIRE words it. The
socket is created mode 0770: the pod's containers that share the volume and group may connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2

from keyless.agent.spiffe_proto import workload_pb2 as pb
from keyless.agent.spiffe_svids import Identity, SvidKeeper
from keyless.core.errors import ConfigError, Forbidden, InvalidRequest, KeylessError, Unauthorized

log = logging.getLogger("keyless.agent.spiffe")

SERVICE = "SpiffeWorkloadAPI"
HEADER = "workload.spiffe.io"
HEADER_MISSING = "security header missing from request"
SOCKET_MODE = 0o770
T = TypeVar("T")


def _guard(context: grpc.aio.ServicerContext) -> Awaitable[None] | None:
    metadata = context.invocation_metadata() or ()
    if any(k == HEADER and v == "true" for k, v in metadata):
        return None
    refusal: Awaitable[None] = context.abort(grpc.StatusCode.INVALID_ARGUMENT, HEADER_MISSING)
    return refusal


def _status(exc: KeylessError) -> grpc.StatusCode:
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, Unauthorized | Forbidden):
        return grpc.StatusCode.PERMISSION_DENIED
    return grpc.StatusCode.UNAVAILABLE


class WorkloadApi:
    def __init__(self, keeper: SvidKeeper) -> None:
        self.keeper = keeper

    async def _changes(self, project: Callable[[Identity], T | None]) -> AsyncIterator[T]:
        """Each new non-empty ``project(identity)``, the current one first."""
        version, sent = 0, None
        while True:
            version, identity = await self.keeper.state.after(version)
            value = project(identity)
            if value is not None and value != sent:
                sent = value
                yield value

    async def fetch_x509_svid(
        self, request: pb.X509SVIDRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.X509SVIDResponse]:
        if (refused := _guard(context)) is not None:
            await refused
            return
        async for svid, federated in self._changes(
            lambda i: (i.svid, i.federated_x509()) if i.svid is not None else None
        ):
            yield pb.X509SVIDResponse(
                svids=[
                    pb.X509SVID(
                        spiffe_id=svid.spiffe_id,
                        x509_svid=b"".join(svid.chain),
                        x509_svid_key=svid.key_der,
                        bundle=b"".join(svid.bundle),
                    )
                ],
                federated_bundles=federated,
            )

    async def fetch_x509_bundles(
        self, request: pb.X509BundlesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.X509BundlesResponse]:
        if (refused := _guard(context)) is not None:
            await refused
            return
        async for bundles in self._changes(lambda i: i.x509_bundles() or None):
            yield pb.X509BundlesResponse(bundles=bundles)

    async def fetch_jwt_bundles(
        self, request: pb.JWTBundlesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JWTBundlesResponse]:
        if (refused := _guard(context)) is not None:
            await refused
            return
        async for bundles in self._changes(lambda i: i.jwt_bundles() or None):
            yield pb.JWTBundlesResponse(bundles=bundles)

    async def fetch_jwt_svid(
        self, request: pb.JWTSVIDRequest, context: grpc.aio.ServicerContext
    ) -> pb.JWTSVIDResponse:
        if (refused := _guard(context)) is not None:
            await refused
        if not request.audience:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        try:
            answer = await self.keeper.jwt_svid(list(request.audience))
        except KeylessError as exc:
            await context.abort(_status(exc), str(exc))
        if request.spiffe_id and request.spiffe_id != answer.spiffe_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"no identity issued for {request.spiffe_id[:200]}",
            )
        return pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=answer.spiffe_id, svid=answer.token)])

    async def validate_jwt_svid(
        self, request: pb.ValidateJWTSVIDRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateJWTSVIDResponse:
        if (refused := _guard(context)) is not None:
            await refused
        if not request.audience:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        if not request.svid:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "svid must be specified")
        try:
            spiffe_id, claims = await self.keeper.validate_jwt(request.svid, request.audience)
        except KeylessError as exc:
            await context.abort(_status(exc), str(exc))
        struct = struct_pb2.Struct()
        struct.update(claims)
        return pb.ValidateJWTSVIDResponse(spiffe_id=spiffe_id, claims=struct)

    def handler(self) -> grpc.GenericRpcHandler:
        def stream(fn: Callable[..., Any], req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_stream_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
            )

        def unary(fn: Callable[..., Any], req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "FetchX509SVID": stream(
                    self.fetch_x509_svid, pb.X509SVIDRequest, pb.X509SVIDResponse
                ),
                "FetchX509Bundles": stream(
                    self.fetch_x509_bundles, pb.X509BundlesRequest, pb.X509BundlesResponse
                ),
                "FetchJWTBundles": stream(
                    self.fetch_jwt_bundles, pb.JWTBundlesRequest, pb.JWTBundlesResponse
                ),
                "FetchJWTSVID": unary(self.fetch_jwt_svid, pb.JWTSVIDRequest, pb.JWTSVIDResponse),
                "ValidateJWTSVID": unary(
                    self.validate_jwt_svid, pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse
                ),
            },
        )


def _clear_stale_socket(path: Path) -> None:
    """A socket left by a previous agent is removed; anything else at PATH is an error."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"--workload-api {path}: exists and is not a socket")
    path.unlink()


async def serve_workload_api(keeper: SvidKeeper, path: Path, stop: asyncio.Event) -> None:
    """Serve until ``stop``; streams end (the clients reconnect to the next agent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_socket(path)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((WorkloadApi(keeper).handler(),))
    old_umask = os.umask(0o007)  # the socket is born 0770, never wider
    try:
        server.add_insecure_port(f"unix:{path}")
        await server.start()
    finally:
        os.umask(old_umask)
    os.chmod(path, SOCKET_MODE)
    log.info("SPIFFE Workload API on unix:%s", path)
    try:
        await stop.wait()
    finally:
        await server.stop(grace=1)
        with contextlib.suppress(OSError):
            path.unlink()
