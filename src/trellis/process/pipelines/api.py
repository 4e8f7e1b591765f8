"""The JSON API of pipelines, assembled from each area's router."""

from ninja import Router

from . import api_alerts, api_board, api_definitions, api_reports

router = Router()
router.add_router("", api_definitions.router)
router.add_router("", api_board.router)
router.add_router("", api_reports.router)
router.add_router("", api_alerts.router)
