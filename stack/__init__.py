"""The local stack: Scaleshop's real servers and replicas as processes on loopback.

`python -m stack up|down|status|scale|logs` mirrors kubectl for a machine without a
cluster. The same `Stack` class is what the tests start, on ports and a data folder
of their own.
"""
