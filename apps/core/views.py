from django.db import connection
from django.http import JsonResponse


def healthz(request):
    """Public liveness and database check for load balancers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
