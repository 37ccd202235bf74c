"""`python -m services.user`: run the user service under gunicorn."""
from services.shared.server import serve

serve("services.user.app:create_app")
