"""The worker: runs jobs from `jobs` and folds domain events from `catalog.events`, from Kafka.

Each topic has its own consumer group, and an offset is committed only once its effect is
durable: a job's outcome (runner.py), a poll's batch of folded events
(services/catalog/projections.py). A worker that dies leaves its messages uncommitted for
another member of the group; main.py runs the process.
"""
