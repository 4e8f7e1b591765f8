"""The JSON API of pipelines: reports."""

from ninja import Router

router = Router(tags=["Pipelines"])
