"""The JSON API: one NinjaAPI assembled from each app's ``api.py`` router.

Mounted at ``/api/``: endpoints under ``/api/v1/``, the OpenAPI schema at ``/api/openapi.json``,
interactive docs at ``/api/docs``. Authentication (``auth``) and the error shape (``errors``)
are decided here once for every app.
"""

from typing import Any

from ninja import NinjaAPI

from trellis.core import api as core_api
from trellis.crm import api as crm_api
from trellis.mail import api as mail_api
from trellis.process import api as process_api
from trellis.process.approvals import api as approvals_api
from trellis.process.automations import api as automations_api
from trellis.process.pipelines import api as pipelines_api
from trellis.support import api as support_api
from trellis.support import billing_api as support_billing_api

from . import errors
from .auth import authentication

DESCRIPTION = """
Trellis' records, for scripts and for the browser.

**Authentication.** Scripts send an API token: `Authorization: Bearer trl_...` (create one with
`POST /api/v1/tokens/` while logged in, or on the server with
`trellis manage create_api_token USERNAME`). The browser uses its session; a
session request that writes also sends the `X-CSRFToken` header.

**Errors** are problem details (`application/problem+json`): `type`, `title`, `status`,
`detail`, and `errors`, a list of `{field, message}` naming each invalid input (`lines.0.quantity`
for the quantity of the first line). A record you may not see is a 404, like one that does
not exist.

**Versions.** Each record has a `version`. Send it back with a change: if someone else changed
the record in between, nothing is written and the answer is 409 with the record as it is now
in `current`.

**Lists** come in pages: `page` (from 1) and `page_size`; `has_next` says whether another
page follows. Amounts are decimal strings in their currency's minor units (KRW has none).
"""


class TrellisAPI(NinjaAPI):
    @property
    def urls(self) -> tuple[list[Any], str, str]:
        patterns, app_name, namespace = super().urls
        return (
            [errors.with_problem_405(pattern) for pattern in patterns] + [errors.unknown_endpoint],
            app_name,
            namespace,
        )

    def get_openapi_schema(self, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(**kwargs)
        errors.document(schema)
        return schema


api = TrellisAPI(
    title="Trellis API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    docs_url="/docs",
    auth=authentication,
)
errors.install(api)
api.add_router("/v1/", core_api.router)
api.add_router("/v1/", crm_api.router)
api.add_router("/v1/", mail_api.router)
api.add_router("/v1/", support_api.router)
api.add_router("/v1/", support_billing_api.router)
api.add_router("/v1/", process_api.router)
api.add_router("/v1/", pipelines_api.router)
api.add_router("/v1/", approvals_api.router)
api.add_router("/v1/", automations_api.router)
