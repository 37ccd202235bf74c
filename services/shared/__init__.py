"""What every Scaleshop service needs: configuration, errors, request validation and
OpenAPI, auth tokens, database, cache, events, metrics, logging and the gunicorn server."""
