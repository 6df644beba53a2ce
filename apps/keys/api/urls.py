from django.urls import path

from .views import KeyInventoryView

urlpatterns = [path("inventory/", KeyInventoryView.as_view(), name="key-inventory")]
