"""The CRM's JSON endpoints: list, read, create, update and delete each kind of record.

The seven record types share one set of endpoints, made for each type by ``RecordEndpoints``
from what the rest of the app already says about it:

- what a caller may write: the service's ``RecordSpec`` (``services.SPECS``);
- which filters and orderings a list takes: ``queries.LISTS``;
- types, lengths, choices and bounds: the model's fields.

Orders and activities add a little (lines; the record an activity is about) in subclasses.

Endpoints stay thin: every read starts from ``queries.records`` (which applies visibility) and
every write is a ``services`` call (which checks rights, validates, audits). Rows are fetched
with ``values()`` and turned into JSON directly: a list costs one query and no model instances,
whatever the page size.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.http import HttpRequest, HttpResponse, QueryDict
from django.utils import translation
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field, create_model

from trellis.core import registry
from trellis.core.api import (
    Id,
    Input,
    Timestamp,
    Version,
    json_response,
    refuse_unknown_params,
    text,
)
from trellis.core.errors import NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import User
from trellis.core.money import MAX_AMOUNT, MINOR_UNITS
from trellis.core.paging import paginate
from trellis.core.visibility import can

from . import queries, services
from .models import InPipeline, OrderLine

router = Router()

# Largest values of the integer columns on PostgreSQL (SQLite's are wider), so that a number
# the database cannot hold is a 422 and not a crash.
_INTEGER_RANGES = {
    "SmallIntegerField": (-(2**15), 2**15 - 1),
    "PositiveSmallIntegerField": (0, 2**15 - 1),
    "IntegerField": (-(2**31), 2**31 - 1),
    "PositiveIntegerField": (0, 2**31 - 1),
    "BigIntegerField": (-(2**63), 2**63 - 1),
    "PositiveBigIntegerField": (0, 2**63 - 1),
}
# The service fills these from the actor when they are not given.
_FILLED_BY_SERVICE = {"owner", "team"}


# Model fields -> pydantic types.


def _bounds(model_field: models.Field) -> dict[str, Any]:
    """``ge``/``le`` from the field's declared validators and its column's range."""
    low, high = _INTEGER_RANGES.get(model_field.get_internal_type(), (None, None))
    if isinstance(model_field, models.DecimalField):
        low, high = -MAX_AMOUNT, MAX_AMOUNT
    for validator in model_field.deconstruct()[3].get("validators", []):
        if isinstance(validator, MinValueValidator):
            low = validator.limit_value if low is None else max(low, validator.limit_value)
        elif isinstance(validator, MaxValueValidator):
            high = validator.limit_value if high is None else min(high, validator.limit_value)
    return {k: v for k, v in (("ge", low), ("le", high)) if v is not None}


def _value_type(model_field: models.Field) -> Any:
    """The type of a value of this field as a caller sends it; foreign keys are ids."""
    if model_field.is_relation:
        return Id
    if model_field.choices:
        return Literal[tuple(value for value, _label in model_field.flatchoices)]
    if isinstance(model_field, models.BooleanField):
        return bool
    if isinstance(model_field, models.DecimalField):
        return Annotated[
            Decimal,
            Field(
                max_digits=model_field.max_digits,
                decimal_places=model_field.decimal_places,
                allow_inf_nan=False,
                **_bounds(model_field),
            ),
        ]
    if isinstance(model_field, models.IntegerField):
        return Annotated[int, Field(**_bounds(model_field))]
    if isinstance(model_field, models.DateTimeField):
        return Timestamp
    if isinstance(model_field, models.DateField):
        return dt.date
    if isinstance(model_field, models.CharField | models.TextField):
        # TextField.max_length is not checked by Django's models, only by forms: check it here.
        return text(max_length=model_field.max_length)
    raise TypeError(f"Say how the API takes a {type(model_field).__name__} ({model_field}).")


def _input_type(model_field: models.Field) -> Any:
    if model_field.many_to_many:
        return list[Id]
    value_type = _value_type(model_field)
    return value_type | None if model_field.null else value_type


def _output_type(model_field: models.Field) -> Any:
    if model_field.many_to_many:
        return list[int]
    if model_field.is_relation:
        value_type = int
    elif isinstance(model_field, models.DecimalField):
        value_type = Annotated[
            str, Field(description="A decimal number as a string, in the currency's minor units.")
        ]
    else:
        value_type = _value_type(model_field)
    return value_type | None if model_field.null else value_type


def _input_name(model_field: models.Field) -> str:
    """``account`` -> ``account_id``; the many-to-many ``accounts`` -> ``account_ids``."""
    if model_field.many_to_many:
        return model_field.related_model._meta.model_name + "_ids"
    return model_field.attname


def _documented_default(model_field: models.Field) -> Any:
    """The default to show in OpenAPI. Omitted fields are left to the model, not sent."""
    if model_field.many_to_many:
        return []
    if model_field.has_default() and callable(model_field.default):
        return None  # e.g. "now": computed when the record is written
    return model_field.get_default()


def _person(first_name: str, last_name: str, username: str) -> str:
    # Same as User.__str__ (full name, else username), from the three joined columns.
    return f"{first_name} {last_name}".strip() or username


class Output(Schema):
    # Extra keys fail the tests that check answers against the schema.
    model_config = ConfigDict(extra="forbid")


class RecordEndpoints:
    """The five endpoints of one record type, and how its rows become JSON."""

    # Fields a create takes beyond the record's own: name -> (type, default or ...).
    create_fields: dict[str, tuple[Any, Any]] = {}
    # Output fields filled by ``attach``: name -> type.
    output_fields: dict[str, Any] = {}
    # Columns ``attach`` needs beyond the output ones.
    extra_columns: tuple[str, ...] = ()
    # Query parameters of the list beyond queries.LISTS' filters: name -> (type, default).
    list_fields: dict[str, tuple[Any, Any]] = {}

    def __init__(self, key: str, path: str) -> None:
        self.key = key
        self.path = path
        self.spec = services.SPECS[key]
        self.model = self.spec.model
        self.label = str(self.model._meta.verbose_name)
        self.label_plural = str(self.model._meta.verbose_name_plural)
        self.tag = self.label_plural.capitalize()
        writable = [
            self.model._meta.get_field(name) for name in (*self.spec.fields, *self.spec.m2m)
        ]
        # The service reports errors under the key it was given; m2m keys are renamed for it.
        self.service_name = {_input_name(f): f.name for f in writable if f.many_to_many}
        self.input_name = {v: k for k, v in self.service_name.items()}
        self._plan_columns(writable)
        self._make_schemas(writable)

    # Rows.

    def _plan_columns(self, writable: list[models.Field]) -> None:
        single = [f for f in writable if not f.many_to_many]
        self.m2m = [f for f in writable if f.many_to_many]
        self.columns = ["id", *(f.attname for f in single), "version", "created_at", "updated_at"]
        # Labels name the related records the list query joins anyway (queries.LISTS); more
        # joins would make every list slower for names a client can look up when it needs them.
        self.people: list[tuple[str, tuple[str, str, str]]] = []
        self.names: list[tuple[str, str]] = []
        joined_anyway = queries.LISTS[self.key].select_related
        for f in single:
            if not f.is_relation or f.name not in joined_anyway:
                continue
            if f.related_model is User:
                joined = tuple(
                    f"{f.name}__{part}" for part in ("first_name", "last_name", "username")
                )
                self.people.append((f"{f.name}_name", joined))
            else:
                self.names.append((f"{f.name}_name", f"{f.name}__name"))
        # Amounts are shown in their currency's minor units: 1500 KRW, 15.00 USD.
        self.money = []
        if any(f.name == "currency" for f in self.model._meta.concrete_fields):
            self.money = [
                f.attname
                for f in self.model._meta.concrete_fields
                if isinstance(f, models.DecimalField)
            ]
        # Read-only amounts too, e.g. an order's total.
        self.columns += [column for column in self.money if column not in self.columns]
        # Where the record stands in its pipeline; it moves through the pipeline endpoints.
        self.in_pipeline = issubclass(self.model, InPipeline)
        if self.in_pipeline:
            self.columns += ["stage_id", "stage_entered_at"]
        self.labels = {label for label, _columns in (*self.people, *self.names)}
        self.values = [
            *self.columns,
            *(column for _label, joined in self.people for column in joined),
            *(column for _label, column in self.names),
            *self.extra_columns,
        ]

    def present(self, user: User, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``values()`` rows -> the API's records, in place; one more query per m2m field."""
        for row in rows:
            for label, (first, last, username) in self.people:
                row[label] = _person(row.pop(first), row.pop(last), row.pop(username))
            for label, column in self.names:
                row[label] = row.pop(column)
            if self.money:
                exponent = _EXPONENTS.get(row["currency"])
                for name in self.money:
                    if row[name] is not None and exponent is not None:
                        row[name] = row[name].quantize(exponent)
        for m2m in self.m2m:
            self._attach_m2m(user, m2m, rows)
        if rows:
            self.attach(user, rows)
        return rows

    def _attach_m2m(self, user: User, m2m: models.ManyToManyField, rows: list[dict]) -> None:
        """The ids of the related records the user may see, for the whole page at once."""
        linked = defaultdict(list)
        if rows:
            target = registry.for_model(m2m.related_model).key
            reverse = m2m.related_query_name()
            pairs = (
                queries.records(user, target)
                .filter(**{f"{reverse}__in": [row["id"] for row in rows]})
                .order_by("pk")
                .values_list(reverse, "pk")
            )
            for record_id, target_id in pairs:
                linked[record_id].append(target_id)
        name = _input_name(m2m)
        for row in rows:
            row[name] = linked[row["id"]]

    def attach(self, user: User, rows: list[dict[str, Any]]) -> None:
        """Add ``output_fields`` to a page of rows (and drop ``extra_columns``)."""

    def read(self, user: User, pk: int) -> dict[str, Any]:
        found = list(queries.records(user, self.key).filter(pk=pk).values(*self.values)[:1])
        if not found:
            raise NotFound(_("No such record."))
        return self.present(user, found)[0]

    def written(self, user: User, record: models.Model) -> dict[str, Any]:
        """The answer to a write: the record as a read would show it.

        A writer who gave the record away (``owner_id`` of someone they cannot see) may not
        read it any more, but is still told what they wrote: built from the service's instance.
        """
        try:
            return self.read(user, record.pk)
        except NotFound:
            row = {}
            for column in self.values:
                value = record
                for part in column.split("__"):
                    value = getattr(value, part) if value is not None else None
                row[column] = value
            return self.present(user, [row])[0]

    # Schemas: what OpenAPI shows, and what requests are checked against.

    def _make_schemas(self, writable: list[models.Field]) -> None:
        name = self.model.__name__
        create, update, output = {}, {}, {"id": (int, ...)}
        for f in writable:
            required = not (f.blank or f.null or f.has_default() or f.name in _FILLED_BY_SERVICE)
            described = {"description": str(f.help_text)} if f.help_text else {}
            default = ... if required else _documented_default(f)
            create[_input_name(f)] = (_input_type(f), Field(default, **described))
            update[_input_name(f)] = (_input_type(f), Field(None, **described))
            output[_input_name(f)] = (_output_type(f), Field(..., **described))
        for column in self.money:
            output.setdefault(column, (_output_type(self.model._meta.get_field(column)), ...))
        for f in writable:
            if f"{f.name}_name" in self.labels:
                named = str | None if f.null else str
                output[f"{f.name}_name"] = (named, Field(..., description="How it is named."))
        if self.in_pipeline:
            output |= {
                "stage_id": (
                    int | None,
                    Field(
                        ...,
                        description="The pipeline stage the record is in. Move it with "
                        "`POST /api/v1/pipelines/records/{type}/{id}/move`.",
                    ),
                ),
                "stage_entered_at": (dt.datetime | None, Field(..., description="Since when.")),
            }
        output |= {
            "version": (int, Field(..., description="Send it back when you change the record.")),
            "created_at": (dt.datetime, ...),
            "updated_at": (dt.datetime, ...),
        }
        output |= {key: (kind, ...) for key, kind in self.output_fields.items()}
        self.Create = create_model(f"{name}Create", __base__=Input, **create, **self.create_fields)
        self.Update = create_model(
            f"{name}Update", __base__=Input, version=(Version, ...), **update
        )
        self.Out = create_model(name, __base__=Output, **output)
        self.Page = create_model(
            f"{name}Page",
            __base__=Output,
            items=(list[self.Out], ...),
            page=(int, ...),
            page_size=(int, ...),
            has_next=(bool, Field(..., description="Whether another page follows.")),
        )
        self.ListParams = create_model(
            f"{name}ListParams", __base__=Input, **self._list_params(), **self.list_fields
        )
        self.list_param_names = frozenset(self.ListParams.model_fields)

    def _list_params(self) -> dict[str, Any]:
        spec = queries.LISTS[self.key]
        orderings = [o for name in spec.orderings for o in (name, "-" + name)]
        params: dict[str, Any] = {}
        if self.searchable:
            params["q"] = (
                text(max_length=200) | None,
                Field(None, description="Part of a name, e-mail or phone number, in any script."),
            )
        params["ordering"] = (
            Literal[tuple(orderings)] | None,
            Field(None, description="A field to sort by; `-` first for descending. Ties: newest."),
        )
        for name, lookup in spec.filters.items():
            model_field = self.model._meta.get_field(lookup.split("__")[0])
            params[name] = (_value_type(model_field) | None, None)
        limits = settings.TRELLIS
        params["page"] = (int, Field(1, ge=1, le=10**9))
        params["page_size"] = (
            int,
            Field(limits["DEFAULT_PAGE_SIZE"], ge=1, le=limits["MAX_PAGE_SIZE"]),
        )
        return params

    @property
    def searchable(self) -> bool:
        # What queries.search can match on.
        names = {f.name for f in self.model._meta.get_fields()}
        return "search_text" in names or "name" in names

    # Endpoints.

    def page_of(self, user: User, given: QueryDict, params: Schema) -> HttpResponse:
        """The list endpoint's answer: one page of the records the user may see."""
        refuse_unknown_params(given, self.list_param_names)
        if not can(user, "view", self.key):
            raise PermissionDenied(_("You may not see this kind of record."))
        filters = params.model_dump(exclude_none=True)
        number, size = filters.pop("page"), filters.pop("page_size")
        q, ordering = filters.pop("q", ""), filters.pop("ordering", "")
        own = {name: filters.pop(name) for name in self.list_fields if name in filters}
        records = queries.records(user, self.key, q=q, ordering=ordering, filters=filters)
        page = paginate(self.narrow(records, own).values(*self.values), number, size)
        return json_response(
            {
                "items": self.present(user, page.items),
                "page": page.number,
                "page_size": page.size,
                "has_next": page.has_next,
            }
        )

    def narrow(self, records: models.QuerySet, given: dict[str, Any]) -> models.QuerySet:
        """Apply the ``list_fields`` that were ``given``."""
        return records

    def create(self, user: User, data: dict[str, Any]) -> Any:
        return services.create(user, self.key, data)

    def to_service(self, data: dict[str, Any]) -> dict[str, Any]:
        return {self.service_name.get(key, key): value for key, value in data.items()}

    @contextmanager
    def answering_for(self, user: User, pk: int | None = None) -> Iterator[None]:
        """Put a service's complaints in the API's terms."""
        try:
            yield
        except ValidationFailed as failure:
            failure.errors = {self.input_name.get(k, k): v for k, v in failure.errors.items()}
            raise
        except StaleVersion as conflict:
            # The record as it is now, as this API shows it (and as the user may see it).
            conflict.current = self.read(user, pk)
            raise

    def register(self, router: Router) -> None:
        """Add this type's endpoints to ``router``."""
        ListParams, Create, Update = self.ListParams, self.Create, self.Update

        def list_records(request: HttpRequest, params: Query[ListParams]) -> HttpResponse:
            return self.page_of(request.auth, request.GET, params)

        def get_record(request: HttpRequest, id: Id) -> HttpResponse:
            return json_response(self.read(request.auth, id))

        def create_record(request: HttpRequest, payload: Create) -> HttpResponse:
            user = request.auth
            with self.answering_for(user):
                record = self.create(user, self.to_service(payload.model_dump(exclude_unset=True)))
            return json_response(self.written(user, record), status=201)

        def update_record(request: HttpRequest, id: Id, payload: Update) -> HttpResponse:
            user = request.auth
            data = payload.model_dump(exclude_unset=True)
            version = data.pop("version")
            with self.answering_for(user, id):
                record = services.update(user, self.key, id, self.to_service(data), version)
            return json_response(self.written(user, record))

        def delete_record(
            request: HttpRequest, id: Id, version: Version | None = None
        ) -> HttpResponse:
            with self.answering_for(request.auth, id):
                services.delete(request.auth, self.key, id, version)
            return HttpResponse(status=204)

        a_record = ("an " if self.label[0] in "aeiou" else "a ") + self.label
        filters = ", ".join(f"`{name}`" for name in queries.LISTS[self.key].filters)
        searching = (
            " `q` matches part of a name, e-mail or phone number." if self.searchable else ""
        )
        collection, item = f"/{self.path}/", f"/{self.path}/{{id}}"
        operations = [
            (collection, "GET", list_records, self.Page, f"list_{self.path}",
             f"List {self.label_plural}",
             f"The {self.label_plural} you may see, newest first unless `ordering` says "
             f"otherwise, a page at a time. Filters: {filters}.{searching} An unknown query "
             "parameter is an error, not ignored."),
            (collection, "POST", create_record, {201: self.Out}, f"create_{self.key}",
             f"Create {a_record}",
             f"The owner is you unless `owner_id` says otherwise. {self.create_notes}"),
            (item, "GET", get_record, self.Out, f"get_{self.key}", f"Read {a_record}", ""),
            (item, "PATCH", update_record, self.Out, f"update_{self.key}", f"Change {a_record}",
             "Send `version` and only the fields to change. If the record changed since you "
             "read that version, nothing is written and the answer is 409 with the current "
             "record in `current`."),
            (item, "DELETE", delete_record, {204: None}, f"delete_{self.key}",
             f"Delete {a_record}",
             "With `version`, only if the record is still at that version. A record that "
             "others still refer to is not deleted (409)."),
        ]  # fmt: skip
        for path, method, view, response, operation_id, summary, description in operations:
            router.add_api_operation(
                path,
                [method],
                view,
                response=response,
                operation_id=operation_id,
                url_name=operation_id,
                summary=summary,
                description=description,
                tags=[self.tag],
            )

    create_notes = ""


_EXPONENTS = {currency: Decimal(1).scaleb(-digits) for currency, digits in MINOR_UNITS.items()}


# Orders carry their lines.


class LineIn(Input):
    product_id: Id
    quantity: _value_type(OrderLine._meta.get_field("quantity")) = 1
    unit_price: _value_type(OrderLine._meta.get_field("unit_price")) = Field(
        None, description="Default: the product's price, if it is in the order's currency."
    )
    discount_pct: _value_type(OrderLine._meta.get_field("discount_pct")) = Decimal(0)


class LineOut(Output):
    id: int
    product_id: int
    product_name: str
    quantity: int
    unit_price: str
    discount_pct: str


class LinesIn(Input):
    version: Version
    lines: list[LineIn]


_LINE_COLUMNS = {
    "id": "lines__id",
    "product_id": "lines__product_id",
    "product_name": "lines__product__name",
    "quantity": "lines__quantity",
    "unit_price": "lines__unit_price",
    "discount_pct": "lines__discount_pct",
}


class OrderEndpoints(RecordEndpoints):
    create_fields = {"lines": (list[LineIn], [])}
    output_fields = {"lines": list[LineOut]}
    create_notes = "Lines may come with it; the total follows from them."

    def create(self, user: User, data: dict[str, Any]) -> Any:
        lines = data.pop("lines", [])
        return services.create_order(user, data, lines)

    def attach(self, user: User, rows: list[dict[str, Any]]) -> None:
        lines = defaultdict(list)
        found = (
            queries.records(user, "order")
            .filter(pk__in=[row["id"] for row in rows], lines__isnull=False)
            .order_by("lines__id")
            .values("id", *_LINE_COLUMNS.values())
        )
        for line in found:
            lines[line["id"]].append({name: line[column] for name, column in _LINE_COLUMNS.items()})
        for row in rows:
            exponent = _EXPONENTS.get(row["currency"])
            for line in lines[row["id"]]:
                if exponent is not None:
                    line["unit_price"] = line["unit_price"].quantize(exponent)
            row["lines"] = lines[row["id"]]

    def register(self, router: Router) -> None:
        super().register(router)

        def set_order_lines(request: HttpRequest, id: Id, payload: LinesIn) -> HttpResponse:
            user = request.auth
            lines = [line.model_dump(exclude_unset=True) for line in payload.lines]
            with self.answering_for(user, id):
                order = services.set_order_lines(user, id, lines, payload.version)
            return json_response(self.written(user, order))

        router.add_api_operation(
            f"/{self.path}/{{id}}/lines",
            ["PUT"],
            set_order_lines,
            response=self.Out,
            operation_id="set_order_lines",
            url_name="order-lines",
            summary="Replace an order's lines",
            description="All lines at once; the total is recomputed. Send the order's `version`.",
            tags=[self.tag],
        )


# Activities hang off another record.

# Every registered record type but activities themselves.
RelatedType = Literal[tuple(t.key for t in registry.all_types() if t.key != "activity")]


class ActivityEndpoints(RecordEndpoints):
    create_fields = {
        "related_type": (RelatedType, Field(..., description="What kind of record it is about.")),
        "related_id": (Id, Field(..., description="The id of the record it is about.")),
    }
    output_fields = {"related_type": str, "related_id": int}
    extra_columns = ("content_type_id", "object_id")
    list_fields = {
        "related_type": (RelatedType | None, Field(None, description="Only about this type.")),
        "related_id": (
            Id | None,
            Field(None, description="With `related_type`: only about this record."),
        ),
    }
    create_notes = "It is about the record named by `related_type` and `related_id`."

    def create(self, user: User, data: dict[str, Any]) -> Any:
        related_type, related_id = data.pop("related_type"), data.pop("related_id")
        return services.create_activity(user, related_type, related_id, data)

    def narrow(self, records: models.QuerySet, given: dict[str, Any]) -> models.QuerySet:
        # Both halves of the generic relation: the activity_rec index covers them.
        if "related_id" in given and "related_type" not in given:
            raise ValidationFailed({"related_type": [_("Say what kind of record it is.")]})
        if "related_type" in given:
            model = registry.get(given["related_type"]).model
            records = records.filter(content_type=ContentType.objects.get_for_model(model))
        if "related_id" in given:
            records = records.filter(object_id=given["related_id"])
        return records

    def attach(self, user: User, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            content_type = ContentType.objects.get_for_id(row.pop("content_type_id"))
            row["related_type"] = registry.for_model(content_type.model_class()).key
            row["related_id"] = row.pop("object_id")


# Names and help texts of the models are translatable; the schema is written in English even
# when the request that first imports this module asked for Korean.
with translation.override("en"):
    RECORD_TYPES = [
        RecordEndpoints("account", "accounts"),
        RecordEndpoints("contact", "contacts"),
        RecordEndpoints("lead", "leads"),
        RecordEndpoints("opportunity", "opportunities"),
        RecordEndpoints("product", "products"),
        OrderEndpoints("order", "orders"),
        ActivityEndpoints("activity", "activities"),
    ]
for record_type in RECORD_TYPES:
    record_type.register(router)
