"""The JSON API of pipelines: alerts."""

from ninja import Router

router = Router(tags=["Pipelines"])
