"""The three-step approval as a viewflow flow: each step a human task assigned to a named
user, then a gateway that ends the request unless the step was approved (as viewflow's own
"hello world" does), persisted by viewflow's Process and Task models."""

from viewflow import this
from viewflow.workflow import flow, lock
from viewflow.workflow.flow.views import UpdateProcessView

from .models import DealApproval

APPROVERS = ["approver-1", "approver-2", "approver-3"]


def _approved(step: int):
    return lambda activation: activation.process.data["decisions"][step]["approved"]


class ThreeStepApproval(flow.Flow):
    process_class = DealApproval
    # The process row is locked (SELECT ... FOR UPDATE) by every change, as in Trellis.
    lock_impl = lock.select_for_update_lock

    start = flow.StartHandle(this.start_request).Next(this.step_1)

    step_1 = (
        flow.View(UpdateProcessView.as_view(fields=[]))
        .Assign(username=APPROVERS[0])
        .Next(this.decided_1)
    )
    decided_1 = flow.If(_approved(0)).Then(this.step_2).Else(this.rejected)

    step_2 = (
        flow.View(UpdateProcessView.as_view(fields=[]))
        .Assign(username=APPROVERS[1])
        .Next(this.decided_2)
    )
    decided_2 = flow.If(_approved(1)).Then(this.step_3).Else(this.rejected)

    step_3 = (
        flow.View(UpdateProcessView.as_view(fields=[]))
        .Assign(username=APPROVERS[2])
        .Next(this.decided_3)
    )
    decided_3 = flow.If(_approved(2)).Then(this.approved).Else(this.rejected)

    approved = flow.End()
    rejected = flow.End()

    def start_request(self, activation, deal):
        activation.process.artifact = deal
        activation.process.data = {"decisions": []}
        return activation.process
