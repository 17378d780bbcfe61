"""The workspace service's routes, one ``APIRouter`` per resource; ``service.create_app`` assembles them.

``dependencies`` holds what routes share the FastAPI way (the key check, the app's run queue and data policy),
``errors`` the ``{"error": {"code", "message"}}`` answers. Routers, in the order the app includes them:
``docs`` (Swagger UI, health), ``submit`` (Azure's submit routes), ``runs``, ``endpoints``, ``schedules``,
``deployments``.
"""
