"""The JSON API of pipelines: board."""

from ninja import Router

router = Router(tags=["Pipelines"])
