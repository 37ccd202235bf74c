"""The console's actions: their input checked, run one at a time through a Controller, each one
audit-logged (a JSON line: time, action, arguments, result) and recorded as a mark (time, label)
that the page draws on its charts' time axis. Timed faults (memcached paused, Kafka stopped for N
seconds) are undone by a timer. Slow actions (scale, the cache switch's rolling restart, faults)
are accepted (202) and run in the background, one at a time; quick ones (the load run) answer with
their result. Bad input raises ValidationFailed; a second slow action while one runs raises
Conflict (both JSON 4xx through services/shared/errors.py).
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.shared.errors import Conflict, DependencyUnavailable, ValidationFailed

from .controller import Controller

SCALABLE = ("user", "catalog", "worker")
MAX_REPLICAS = 6
CACHE_PATTERNS = ("objects", "queries")
MAX_LOAD_RATE = 300.0
MAX_LOAD_SECONDS = 600
JOURNEYS = ("browse", "product", "signin", "review", "import")
MAX_PAUSE_SECONDS = 60
MAX_KAFKA_DOWN_SECONDS = 120
MARKS_KEPT = 500
_MIX = re.compile(r"^[a-z]+=\d{1,4}(,[a-z]+=\d{1,4})*$")


def _bad(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", [{"field": field, "message": message}])


def _int(body: dict, field: str, low: int, high: int) -> int:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(field, f"must be a whole number from {low} to {high}")
    return value


def _choice(body: dict, field: str, choices: tuple[str, ...]) -> str:
    value = body.get(field)
    if value not in choices:
        raise _bad(field, f"must be one of: {', '.join(choices)}")
    return value


def check_scale(body: dict) -> dict:
    return {"service": _choice(body, "service", SCALABLE), "replicas": _int(body, "replicas", 1, MAX_REPLICAS)}


def check_cache(body: dict) -> dict:
    patterns = body.get("patterns")
    if not isinstance(patterns, list) or not all(p in CACHE_PATTERNS for p in patterns):
        raise _bad("patterns", f"must be a list of: {', '.join(CACHE_PATTERNS)} (empty: cache off)")
    return {"patterns": sorted(set(patterns))}


def check_load(body: dict) -> dict:
    rate = body.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 1 <= rate <= MAX_LOAD_RATE:
        raise _bad("rate", f"must be a number of requests per second from 1 to {MAX_LOAD_RATE:g}")
    mix = body.get("mix", "browse=40,product=60")
    if not isinstance(mix, str) or not _MIX.match(mix) or \
            any(part.split("=")[0] not in JOURNEYS for part in mix.split(",")):
        raise _bad("mix", f"must be journey=weight pairs, e.g. product=60,browse=40 (journeys: {', '.join(JOURNEYS)})")
    return {"rate": float(rate), "mix": mix, "duration": _int(body, "duration", 5, MAX_LOAD_SECONDS)}


def check_kill(body: dict, replicas: dict[str, list[dict]]) -> dict:
    name = body.get("replica")
    running = [r["name"] for rs in replicas.values() for r in rs if r["state"] == "running"]
    if not isinstance(name, str) or name not in running:
        raise _bad("replica", f"must be a running replica ({', '.join(running) or 'none'})")
    return {"replica": name}


class Console:
    """The actions of one console: at most one at a time, audit log, marks, timers that undo faults."""

    def __init__(self, controller: Controller, audit_log: Path, clock: Callable[[], float] = time.time,
                 timer: Callable[[float, Callable[[], None]], Any] | None = None,
                 background: Callable[[Callable[[], None]], Any] | None = None):
        self.controller = controller
        self.audit_log = audit_log
        self.clock = clock
        self.marks: list[dict] = []
        self._busy = threading.Lock()
        self._record_lock = threading.Lock()
        self._timer = timer or _daemon_timer
        self._background = background or (lambda work: _daemon_timer(0, work))
        self.running: str | None = None

    # ---- records ---------------------------------------------------------------------------

    def _mark(self, started: float, action: str, arguments: dict) -> dict:
        mark = {"time": started, "label": _label(action, arguments), "action": action, "result": "running"}
        with self._record_lock:
            self.marks.append(mark)
            del self.marks[:-MARKS_KEPT]
        return mark

    def _finish(self, mark: dict, arguments: dict, result: str) -> dict:
        line = {"time": _iso(mark["time"]), "action": mark["action"], "arguments": arguments, "result": result,
                "seconds": round(self.clock() - mark["time"], 2)}
        with self._record_lock:
            mark["result"] = result
            self.audit_log.parent.mkdir(parents=True, exist_ok=True)
            with self.audit_log.open("a") as log:
                log.write(json.dumps(line) + "\n")
        return {**line, "label": mark["label"]}

    def _do(self, mark: dict, arguments: dict, work: Callable[[], object]) -> tuple[dict, Exception | None]:
        """Run `work`; audit-log and settle the mark with its result."""
        try:
            work()
        except ValueError as exc:
            return self._finish(mark, arguments, f"refused: {exc}"), ValidationFailed(str(exc))
        except Exception as exc:  # noqa: BLE001 - the platform failed: told as a 503, logged
            failed = DependencyUnavailable(f"{mark['action']} failed: {exc}")
            return self._finish(mark, arguments, f"failed: {exc}"), failed
        return self._finish(mark, arguments, "ok"), None

    def _run_now(self, action: str, arguments: dict, work: Callable[[], object]) -> dict:
        """A quick action, answered with its result (4xx/503 when it was refused or failed)."""
        done, error = self._do(self._mark(self.clock(), action, arguments), arguments, work)
        if error is not None:
            raise error
        return done

    def _run_in_background(self, action: str, arguments: dict, work: Callable[[], object]) -> dict:
        """A slow action (scale, a rolling restart, a fault), one at a time: accepted now, run in the
        background (the gateway that proxies this request may be reloaded by it), its result in the
        audit log, the marks and the state."""
        if not self._busy.acquire(blocking=False):
            raise Conflict(f"'{self.running}' is still running; try again when it is done")
        self.running = action
        mark = self._mark(self.clock(), action, arguments)

        def run() -> None:
            try:
                self._do(mark, arguments, work)
            finally:
                self.running = None
                self._busy.release()

        try:
            self._background(run)
        except BaseException:
            self.running = None
            self._busy.release()
            raise
        return {"time": _iso(mark["time"]), "action": action, "arguments": arguments, "result": "accepted",
                "label": mark["label"]}

    # ---- the actions -----------------------------------------------------------------------

    def scale(self, body: dict) -> dict:
        args = check_scale(body)
        return self._run_in_background("scale", args, lambda: self.controller.scale(args["service"], args["replicas"]))

    def cache(self, body: dict) -> dict:
        args = check_cache(body)
        return self._run_in_background("cache", args,
                                       lambda: self.controller.set_cache_patterns(",".join(args["patterns"])))

    def start_load(self, body: dict) -> dict:
        args = check_load(body)
        return self._run_now("load-start", args,
                             lambda: self.controller.start_load(args["rate"], args["mix"], args["duration"]))

    def stop_load(self) -> dict:
        def stop() -> None:
            if not self.controller.stop_load():
                raise ValueError("no load run is running")
        return self._run_now("load-stop", {}, stop)

    def kill(self, body: dict) -> dict:
        args = check_kill(body, self.controller.replicas())
        return self._run_in_background("kill", args, lambda: self.controller.kill_replica(args["replica"]))

    def pause_memcached(self, body: dict) -> dict:
        args = {"seconds": _int(body, "seconds", 1, MAX_PAUSE_SECONDS)}
        return self._timed_fault("pause-memcached", args, self.controller.pause_memcached,
                                 self.controller.resume_memcached, "resume-memcached")

    def stop_kafka(self, body: dict) -> dict:
        args = {"seconds": _int(body, "seconds", 5, MAX_KAFKA_DOWN_SECONDS)}
        return self._timed_fault("stop-kafka", args, self.controller.stop_kafka,
                                 self.controller.start_kafka, "start-kafka")

    def _timed_fault(self, action: str, args: dict, do: Callable[[], None], undo: Callable[[], None],
                     undo_action: str) -> dict:
        """`do` now (in the background), `undo` args["seconds"] after it succeeded."""
        def fault() -> None:
            do()

            def restore() -> None:  # waits for a running action: two never change the stack's state at once
                with self._busy:
                    self.running = undo_action
                    try:
                        self._do(self._mark(self.clock(), undo_action, {}), {}, undo)
                    finally:
                        self.running = None

            self._timer(args["seconds"], restore)

        return self._run_in_background(action, args, fault)

    # ---- what the page shows ---------------------------------------------------------------

    def state(self) -> dict:
        return {"replicas": self.controller.replicas(), "servers": self.controller.servers(),
                "cache_patterns": self.controller.cache_patterns(), "load": self.controller.load(),
                "running": self.running, "marks": self.marks[-10:]}


def _label(action: str, args: dict) -> str:
    if action == "scale":
        return f"scale {args['service']}={args['replicas']}"
    if action == "cache":
        return f"cache {','.join(args['patterns']) or 'off'}"
    if action == "load-start":
        return f"load {args['rate']:g}/s {args['duration']}s"
    if action == "kill":
        return f"kill {args['replica']}"
    if "seconds" in args:
        return f"{action} {args['seconds']}s"
    return action


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def _daemon_timer(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer
