"""The worker: consumes jobs and domain events from Kafka as one consumer group.

Until the jobs issue lands it joins the group, reports its state and leaves every
message uncommitted (nothing is lost: a worker that can handle it will).
"""
