"""The lab console: a small Flask app behind the gateway's /console/ that shows the stack live (from
Prometheus) and lets an operator scale, switch the cache, run a bounded load and inject faults."""
