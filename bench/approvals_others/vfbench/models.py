from django.conf import settings
from django.db import models
from viewflow.workflow.models import Process


class Deal(models.Model):
    """The record submitted for approval."""

    name = models.CharField(max_length=200)
    amount = models.DecimalField(max_digits=18, decimal_places=2)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    version = models.PositiveIntegerField(default=1)

    def __str__(self) -> str:
        return self.name


class DealApproval(Process):
    """A request: the deal is the process's artifact, the decisions are in ``data``."""

    class Meta:
        proxy = True
