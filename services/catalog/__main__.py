"""`python -m services.catalog`: run the catalog service under gunicorn."""
from services.shared.server import serve

serve("services.catalog.app:create_app")
