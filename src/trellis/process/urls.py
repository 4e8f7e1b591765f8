"""The pages of task threads, mounted at the site's root: /work/, /tasks/, /notifications/, and
the external participant's page at ``external.LINK_PATH`` (/task-link/<token>/)."""

from django.urls import path

from . import participant, views

app_name = "process"

urlpatterns = [
    path("work/", views.my_work, name="my-work"),
    path("work/team/", views.team_work, name="team-work"),
    path("work/mail/", views.digest, name="digest"),
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/new/", views.task_create, name="task-create"),
    path("tasks/<int:pk>/", views.task_detail, name="task-detail"),
    path("tasks/<int:pk>/claim/", views.task_claim, name="task-claim"),
    path("tasks/<int:pk>/start/", views.task_start, name="task-start"),
    path("tasks/<int:pk>/wait/", views.task_wait, name="task-wait"),
    path("tasks/<int:pk>/cancel/", views.task_cancel, name="task-cancel"),
    path("tasks/<int:pk>/edit/", views.task_edit, name="task-edit"),
    path("tasks/<int:pk>/reassign/", views.task_reassign, name="task-reassign"),
    path("tasks/<int:pk>/complete/", views.task_complete, name="task-complete"),
    path("tasks/<int:pk>/comments/", views.task_comment, name="task-comment"),
    path("tasks/<int:pk>/files/", views.task_attach, name="task-attach"),
    path(
        "tasks/<int:pk>/files/<int:attachment_id>/",
        views.task_attachment,
        name="task-attachment",
    ),
    path("tasks/<int:pk>/links/", views.task_send_link, name="task-send-link"),
    path("task-links/<int:pk>/revoke/", views.link_revoke, name="link-revoke"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/read/", views.notifications_read, name="notifications-read"),
    path("notifications/<int:pk>/open/", views.notification_open, name="notification-open"),
    # The external participant's page: no login, the token is the key.
    path("task-link/<str:token>/", participant.link_page, name="link"),
    path("task-link/<str:token>/comment/", participant.link_comment, name="link-comment"),
    path("task-link/<str:token>/files/", participant.link_attach, name="link-attach"),
    path(
        "task-link/<str:token>/files/<int:attachment_id>/",
        participant.link_attachment,
        name="link-attachment",
    ),
    path("task-link/<str:token>/complete/", participant.link_complete, name="link-complete"),
]
