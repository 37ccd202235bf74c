#!/bin/sh
# kafka-run-class.sh CLASS ARG...: runs a Kafka main class on the image's jars, with the
# variables of Apache Kafka's own scripts: KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_LOG4J_OPTS, KAFKA_OPTS and LOG_DIR (GC logs and kafka.logs.dir).
set -eu
KAFKA_HOME=/opt/kafka
LOG_DIR=${LOG_DIR:-/tmp/kafka-logs}
mkdir -p "$LOG_DIR"
class=$1; shift
# shellcheck disable=SC2086  # the *_OPTS variables are lists of JVM options
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -Djava.awt.headless=true} \
  ${KAFKA_LOG4J_OPTS:--Dlog4j.configuration=file:$KAFKA_HOME/config/log4j.properties} \
  -Dkafka.logs.dir="$LOG_DIR" ${KAFKA_OPTS:-} \
  -cp "$KAFKA_HOME/libs/*" "$class" "$@"
