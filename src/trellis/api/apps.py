from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "trellis.api"
    label = "trellis_api"
