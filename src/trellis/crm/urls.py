"""The CRM's pages. Each record type gets the same set of URLs from ``views.PAGES``."""

from django.urls import path

from . import views

app_name = "crm"

urlpatterns = [
    path("search/", views.search, name="search"),
    path("pick/regarding/", views.pick_regarding, name="pick-regarding"),
    path("pick/<str:object_type>/", views.pick, name="pick"),
    path("orders/<int:pk>/lines/", views.order_lines, name="order-lines"),
]

for pages in views.PAGES.values():
    key, kwargs = pages.key, {"object_type": pages.key}
    urlpatterns += [
        path(f"{pages.slug}/", views.record_list, kwargs, name=f"{key}-list"),
        path(f"{pages.slug}/new/", views.record_create, kwargs, name=f"{key}-create"),
        path(f"{pages.slug}/validate/", views.record_validate, kwargs, name=f"{key}-validate"),
        path(f"{pages.slug}/<int:pk>/", views.record_detail, kwargs, name=f"{key}-detail"),
        path(f"{pages.slug}/<int:pk>/edit/", views.record_edit, kwargs, name=f"{key}-edit"),
        path(f"{pages.slug}/<int:pk>/delete/", views.record_delete, kwargs, name=f"{key}-delete"),
    ]
    if key != "activity":
        urlpatterns.append(
            path(
                f"{pages.slug}/<int:pk>/activities/",
                views.activity_log,
                kwargs,
                name=f"{key}-log-activity",
            )
        )
