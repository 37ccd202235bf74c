"""Locust side of `make bench`: FastHttpUser, one GET of $LOCUST_PATH, wait $LOCUST_WAIT seconds."""
import os

from locust import FastHttpUser, constant, task


class Bench(FastHttpUser):
    wait_time = constant(float(os.environ.get("LOCUST_WAIT", "0")))

    @task
    def get(self):
        self.client.get(os.environ.get("LOCUST_PATH", "/healthz"))
