"""The JSON API of pipelines: definitions."""

from ninja import Router

router = Router(tags=["Pipelines"])
