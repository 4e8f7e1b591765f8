"""What every app's API shares, and core's own endpoints: who am I, and my API tokens.

The NinjaAPI itself is put together in ``trellis.api``. Apps may not import it (the layers point
one way: api above the domain apps above core), so the small pieces their routers share live
here: input types that refuse what the database could not store, and a fast JSON answer.
"""

import datetime as dt
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from ninja import Router, Schema
from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field, StringConstraints

from . import services, visibility
from .errors import ValidationFailed
from .models import ApiToken, User

# Every id column is a 64-bit integer; a larger number would crash the database driver
# instead of simply matching nothing.
MAX_ID = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Version = Annotated[
    int,
    Field(
        ge=1,
        le=2**31 - 1,
        description="The `version` of the record as you read it. If someone changed the record "
        "since, nothing is written and the answer is 409 with the current record.",
    ),
]


def _storable(value: str) -> str:
    # PostgreSQL refuses NUL characters and both databases refuse lone surrogates ("\ud800"),
    # which JSON can carry; without this check they would surface as a 500 from the driver.
    if "\x00" in value:
        raise ValueError("Text cannot contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("Text must be valid Unicode.") from None
    return value


def text(max_length: int | None = None, min_length: int | None = None) -> Any:
    """A string the database can store, of at most ``max_length`` characters."""
    limits = StringConstraints(max_length=max_length, min_length=min_length)
    return Annotated[str, limits, AfterValidator(_storable)]


def _storable_time(value: dt.datetime) -> dt.datetime:
    # Years near 1 or 9999 overflow when the database converts them to UTC.
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("This time is out of range.") from None


Timestamp = Annotated[AwareDatetime, AfterValidator(_storable_time)]


class Input(Schema):
    """The base of every request body: a misspelt field is refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Promise):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def refuse_unknown_params(given: Iterable[str], allowed: Iterable[str]) -> None:
    """A query parameter an endpoint does not take is a 422 naming it, not silently ignored
    (a misspelt filter would otherwise return every row)."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValidationFailed({name: [_("Unknown query parameter.")] for name in unknown})


def json_response(
    data: Any, status: int = 200, content_type: str = "application/json"
) -> HttpResponse:
    """A JSON answer built without a pydantic round trip.

    Endpoints still declare their response schema for OpenAPI, but validating every row of a
    list against it costs more than the query that fetched them, so rows are built as plain
    dicts by code that follows the same schema (and the tests compare the two).
    """
    body = json.dumps(data, default=_encode, ensure_ascii=False, separators=(",", ":"))
    return HttpResponse(body.encode(), status=status, content_type=content_type)


# Core's own endpoints.

router = Router(tags=["Me"])


class RightOut(Schema):
    scope: str = Field(description="Which records you see: none, own, team, subordinates, all.")
    create: bool
    edit: bool
    delete: bool


class MeOut(Schema):
    id: int
    username: str
    name: str
    email: str
    language: str
    team_id: int | None
    team_name: str | None
    role: str | None = Field(description="The role's code, e.g. `sales`.")
    rights: dict[str, RightOut] = Field(description="What you may do, per record type.")


@router.get(
    "/me",
    response=MeOut,
    operation_id="get_me",
    summary="Who am I",
    description="The user the request is authenticated as, and their rights per record type.",
)
def me(request: HttpRequest) -> HttpResponse:
    user: User = request.auth
    team = user.team
    rights = {
        object_type: {"scope": scope, "create": create, "edit": edit, "delete": delete}
        for object_type, (scope, create, edit, delete) in visibility.rights_of(user).items()
    }
    return json_response(
        {
            "id": user.pk,
            "username": user.username,
            "name": str(user),
            "email": user.email,
            "language": user.language,
            "team_id": user.team_id,
            "team_name": team.name if team else None,
            "role": user.role.code if user.role_id else None,
            "rights": rights,
        }
    )


class TokenIn(Input):
    name: text(min_length=1, max_length=100) = Field(
        description="What the token is for, e.g. the script that uses it."
    )


class TokenOut(Schema):
    id: int
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None = Field(description="Updated at most once an hour.")


class NewTokenOut(TokenOut):
    key: str = Field(
        description="Send it as `Authorization: Bearer <key>`. Shown only in this answer: "
        "Trellis keeps only a hash of it."
    )


def _token(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.pk,
        "name": token.name,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
    }


@router.get(
    "/tokens/",
    response=list[TokenOut],
    operation_id="list_tokens",
    tags=["API tokens"],
    summary="List my API tokens",
    description="Your tokens that are not revoked, newest first. Keys are never shown again.",
)
def list_tokens(request: HttpRequest) -> HttpResponse:
    tokens = ApiToken.objects.filter(user=request.auth, revoked_at__isnull=True).order_by("-id")
    return json_response([_token(token) for token in tokens])


@router.post(
    "/tokens/",
    response={201: NewTokenOut},
    operation_id="create_token",
    tags=["API tokens"],
    summary="Create an API token",
    description="A new token for scripts, acting as you. The key is in this answer only.",
)
def create_token(request: HttpRequest, payload: TokenIn) -> HttpResponse:
    token, key = services.create_api_token(request.auth, payload.name)
    return json_response({**_token(token), "key": key}, status=201)


@router.delete(
    "/tokens/{token_id}",
    response={204: None},
    operation_id="revoke_token",
    tags=["API tokens"],
    summary="Revoke an API token",
    description="The token stops working at once.",
)
def revoke_token(request: HttpRequest, token_id: Id) -> HttpResponse:
    services.revoke_api_token(request.auth, token_id)
    return HttpResponse(status=204)
