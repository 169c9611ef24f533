"""``POST /{tenant}/oauth2/v2.0/token`` (and GET with a form body, as Entra): one URL, two
token dialects, chosen by grant_type.

AD FS's token URL (``/adfs/oauth2/token``, named by ``api/adfs``'s discovery document) is this
same handler for the tenant ``adfs`` (the default tenant, ``api/tenancy.py``), which any tenant
path may name too.

``client_credentials`` is Entra v2 (``api/entra/token.py``), the RFC 8693 grant is
``api/rfc8693``. What comes before the choice (the per-client throttle, the tenant, the form)
is answered in Entra's error body, as the SDKs that call this URL expect.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import edge_of
from keyless.api.entra import token as entra
from keyless.api.forms import read_form, required
from keyless.api.oautherrors import entra_error
from keyless.api.rfc8693 import exchange as rfc8693
from keyless.api.tenancy import ADFS, ADFS_TOKEN_PATH, tenant_named
from keyless.api.throttle import spend_token_request
from keyless.core import errors


async def token(request: Request) -> Response:
    edge = edge_of(request)
    broker = edge.broker
    try:
        spend_token_request(request)  # before the body is read or the tenant looked up
        tenant = await tenant_named(edge, request.path_params.get("tenant", ADFS))
        fields = await read_form(request)
        grant = required(fields, "grant_type")
        if grant == rfc8693.GRANT:
            return await rfc8693.handle(broker, tenant, fields)
        return await entra.client_credentials(broker, tenant, fields)
    except errors.KeylessError as exc:
        if isinstance(exc, errors.NotFound) and not isinstance(exc, errors.UnknownClient):
            return entra_error(400, "invalid_tenant", 90002, exc.message)
        return entra.render_error(exc)


# GET too: Entra answers a GET whose body is the form (the blog's script sends
# ``curl -X GET … --form …``, a multipart body), so keyless does.
routes = [Route("/{tenant}/oauth2/v2.0/token", token, methods=["GET", "POST"])]
# AD FS's token URL, named by api/adfs's discovery document; the same methods as Entra's.
routes.append(Route(ADFS_TOKEN_PATH, token, methods=list(routes[0].methods or ())))
