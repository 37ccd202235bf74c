#!/bin/sh
# kafka-server-start.sh server.properties: the broker (and KRaft controller) in the foreground.
exec "$(dirname "$0")/kafka-run-class.sh" kafka.Kafka "$@"
