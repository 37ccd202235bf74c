#!/bin/sh
# kafka-topics.sh --bootstrap-server HOST:PORT --list | --create ... | --describe ...
# A small heap unless the caller sets one (the admin client needs little).
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx128m} exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.TopicCommand "$@"
