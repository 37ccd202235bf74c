"""The CPU beside the scale experiment (loadgen/platform.py, loadgen/experiments.py scale_summary,
loadgen/report.py scale_caption): what the replicas could use and what they used, read from a fake
/proc and fake cgroups; per-CPU efficiency; and a 1-replica point that was not CPU-bound is called
what it is instead of super-linear scaling."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from loadgen import platform
from loadgen.engine import RunConfig
from loadgen.experiments import capacity_search, scale_summary
from loadgen.report import scale_caption
from loadgen.workload import Workload

TICK = platform.CLOCK_TICKS


def write_proc(root: Path, pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0,
               state: str = "S") -> None:
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    rest = ["0"] * 40
    fields = [state, str(ppid), *rest[:9], str(utime), str(stime), str(cutime), str(cstime), *rest[:20]]
    (root / str(pid) / "stat").write_text(f"{pid} (python -m x) " + " ".join(fields))


def test_a_process_tree_and_its_cpu_come_from_proc_stat(tmp_path: Path):
    write_proc(tmp_path, 100, 1, 2 * TICK, TICK, cutime=TICK)  # gunicorn master, one reaped worker
    write_proc(tmp_path, 101, 100, 3 * TICK, 0)  # a worker
    write_proc(tmp_path, 102, 101, TICK, 0)  # a grandchild
    write_proc(tmp_path, 200, 1, 9 * TICK, 0)  # not ours
    write_proc(tmp_path, 103, 100, 50 * TICK, 0, state="Z")  # a zombie: its time is not yet its parent's
    assert sorted(platform.process_tree(100, tmp_path)) == [100, 101, 102]
    assert platform.process_cpu_seconds(100, tmp_path) == 4.0
    assert sum(platform.process_cpu_seconds(p, tmp_path) for p in platform.process_tree(100, tmp_path)) == 8.0
    assert platform.process_cpu_seconds(999, tmp_path) == 0.0  # gone


def test_a_cgroups_cpu_is_read_where_the_kernel_keeps_it_else_summed_over_its_processes(tmp_path: Path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nnr_periods 40\nnr_throttled 30\n")
    assert platform.cgroup_cpu(v2) == {"cpu_s": 2.5, "method": "cgroup v2 cpu.stat usage_usec", "periods": 40,
                                       "throttled": 30}
    v1acct = tmp_path / "v1acct"
    v1acct.mkdir()
    (v1acct / "cpuacct.usage").write_text("1500000000\n")
    assert platform.cgroup_cpu(v1acct)["cpu_s"] == 1.5
    proc = tmp_path / "proc"
    write_proc(proc, 300, 1, 2 * TICK, TICK)
    write_proc(proc, 301, 300, TICK, 0)
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "cpu.stat").write_text("nr_periods 10\nnr_throttled 9\nthrottled_time 5\n")
    (v1 / "cgroup.procs").write_text("300\n301\n")
    found = platform.cgroup_cpu(v1, proc)
    assert found["cpu_s"] == 4.0 and "cgroup's processes" in found["method"] and found["throttled"] == 9


def test_the_machines_busy_time_leaves_out_idle_and_iowait(tmp_path: Path):
    (tmp_path / "stat").write_text(f"cpu  {4 * TICK} 0 {TICK} {100 * TICK} {7 * TICK} 0 {TICK} 0 0 0\ncpu0 1 2 3\n")
    assert platform.machine_cpu_seconds(tmp_path) == 6.0


def sample(t: float, replicas: dict[str, tuple[float, float | None]], loadgen: float = 0.0, machine: float = 0.0,
           gateway: float = 0.0, others: dict[str, tuple[float, float | None]] | None = None,
           throttled: tuple[int, int] | None = None) -> dict:
    def cpu(seconds: float, quota: float | None) -> dict:
        out = {"cpu_s": seconds, "quota_cpus": quota, "method": "test"}
        if throttled:
            out.update(periods=throttled[0], throttled=throttled[1])
        return out
    return {"t": t, "replicas": {n: cpu(*v) for n, v in replicas.items()},
            "others": {n: cpu(*v) for n, v in (others or {}).items()}, "gateway": {"cpu_s": gateway, "workers": 2},
            "loadgen": loadgen, "machine": machine}


def test_cpu_available_is_the_sum_of_quotas_capped_by_the_cores_and_used_is_per_second():
    before = sample(0.0, {f"catalog-{i}": (0.0, 0.25) for i in range(1, 5)}, throttled=(0, 0))
    after = sample(10.0, {f"catalog-{i}": (2.4, 0.25) for i in range(1, 5)}, loadgen=3.0, machine=18.0,
                   gateway=2.0, others={"user-1": (1.0, 0.25)}, throttled=(100, 80))
    before["others"] = {"user-1": {"cpu_s": 0.0, "quota_cpus": 0.25, "method": "test"}}
    usage = platform.cpu_usage(before, after, cores=2)
    assert usage["available_cpus"] == 1.0 and usage["quota_cpus"] == 1.0 and usage["used_cpus"] == 0.96
    assert usage["share_of_available"] == 0.96 and usage["throttled_share"] == 0.8
    assert usage["loadgen_cpus"] == 0.3 and usage["gateway_cpus"] == 0.2 and usage["machine_busy_cpus"] == 1.8
    assert usage["others"]["user-1"]["used_cpus"] == 0.1
    assert usage["other_processes_cpus"] == round(1.8 - 0.96 - 0.2 - 0.3 - 0.1, 3)
    before.update(servers={"memcached": 1.0}, interrupts=5.0)
    after.update(servers={"memcached": 2.0}, interrupts=6.0)
    split = platform.cpu_usage(before, after, cores=2)
    assert split["servers_cpus"] == {"memcached": 0.1} and split["interrupts_cpus"] == 0.1
    assert split["other_processes_cpus"] == round(1.8 - 0.96 - 0.2 - 0.3 - 0.1 - 0.1 - 0.1, 3)
    capped = platform.cpu_usage(sample(0, {f"c-{i}": (0.0, 1.0) for i in range(4)}),
                                sample(1, {f"c-{i}": (0.5, 1.0) for i in range(4)}), cores=2)
    assert capped["quota_cpus"] == 4.0 and capped["available_cpus"] == 2.0  # 4 quotas of 1 CPU on 2 cores
    unlimited = platform.cpu_usage(sample(0, {"c-1": (0.0, None)}), sample(1, {"c-1": (0.7, None)}), cores=2)
    assert unlimited["available_cpus"] == 2.0 and unlimited["quota_cpus"] is None


def usage(used: float, available: float = 0.25, loadgen: float = 0.2, machine: float = 0.8, gateway: float = 0.1,
          others: dict | None = None) -> dict:
    return {"used_cpus": used, "available_cpus": available, "share_of_available": used / available,
            "throttled_share": None, "replicas": 1, "loadgen_cpus": loadgen, "loadgen_processes": 1,
            "gateway_cpus": gateway, "gateway_workers": 2, "others": others or {}, "machine_busy_cpus": machine,
            "cores": 2, "other_processes_cpus": 0.0}


def test_the_baseline_check_names_what_limited_a_point_that_was_not_cpu_bound():
    assert platform.baseline_check(usage(0.24))["cpu_bound"] is True
    loadgen = platform.baseline_check(usage(0.15, loadgen=0.97))
    assert loadgen["external"] is True and loadgen["limited_by"].startswith("the load generator (0.97 CPU")
    machine = platform.baseline_check(usage(0.15, machine=1.95))
    assert machine["limited_by"].startswith("the machine (1.95 of 2 cores busy, 0.05 idle of the 0.10 CPU")
    # unlimited replicas on 2 cores: 0.79 CPU left unused by them, but only 0.28 idle on the machine
    shared = platform.baseline_check(usage(1.21, available=2.0, machine=1.72))
    assert shared["limited_by"].startswith("the machine (1.72 of 2 cores busy, 0.28 idle of the 0.79 CPU")
    assert platform.baseline_check(usage(1.21, available=2.0, machine=1.4))["limited_by"] == "latency, not CPU"
    neighbour = platform.baseline_check(usage(0.15, others={"user-1": {"used_cpus": 0.25, "quota_cpus": 0.25}}))
    assert neighbour["limited_by"] == "user-1 (0.25 of its 0.25 CPU)"
    latency = platform.baseline_check(usage(0.15))
    assert latency["external"] is False and latency["limited_by"] == "latency, not CPU"
    assert "used 0.15 of 0.25 CPU available (60%)" in latency["text"]
    assert platform.baseline_check(None)["limited_by"] == "not measured"


def point(replicas: int, rps: float, cpu: dict | None) -> dict:
    knee = {"throughput_rps": rps, "cpu": cpu} if rps else None
    return {"replicas": replicas, "capacity_rps": rps, "capacity": {"knee": knee}}


def test_a_speed_up_above_n_over_a_starved_single_replica_is_not_called_super_linear():
    points = [point(1, 100.0, usage(0.15, loadgen=0.97)), point(4, 500.0, usage(0.96, available=1.0))]
    summary = scale_summary(points)
    one, four = points
    assert summary["speedup"] == 5.0 and four["efficiency"] == 1.25
    assert one["rps_per_cpu"] == round(100 / 0.15, 1) and four["rps_per_cpu"] == round(500 / 0.96, 1)
    assert four["per_cpu_efficiency"] == round(four["rps_per_cpu"] / one["rps_per_cpu"], 3)
    assert "not super-linear scaling" in summary["verdict"] and "the load generator (0.97 CPU" in summary["verdict"]
    assert "(rps_n/cpu_n)/(rps_1/cpu_1) 0.78" in summary["verdict"]
    caption = scale_caption(points)
    assert "0.25 CPU available and used 0.15 at 1, 1.00 and 0.96 at 4" in caption
    assert "serve 0.78× as much" in caption and "not CPU-bound; limited by the load generator" in caption


def test_a_cpu_bound_baseline_is_said_fair_and_kubernetes_says_not_measured():
    fair = [point(1, 100.0, usage(0.24)), point(4, 360.0, usage(0.95, available=1.0))]
    summary = scale_summary(fair)
    assert "CPU-bound, a fair point to compare" in summary["verdict"] and "super-linear" not in summary["verdict"]
    assert "not more CPU per replica" not in summary["verdict"]
    cheaper = [point(1, 100.0, usage(0.24)), point(4, 480.0, usage(0.9, available=1.0))]
    summary = scale_summary(cheaper)
    assert ("The speed-up above 4× is not more CPU per replica (0.90 of 1.00 CPU available used vs 0.24 of 0.25 CPU "
            "available used): the replicas served 533 requests per CPU-second at 4 and 417 at 1") in summary["verdict"]
    kube = [point(1, 100.0, None), point(4, 380.0, None)]
    summary = scale_summary(kube)
    assert kube[1]["per_cpu_efficiency"] is None and "CPU not measured" in summary["verdict"]
    assert "was not measured here" in scale_caption(kube)


def test_capacity_search_keeps_the_cpu_of_each_step_and_of_its_answer():
    from tests.unit.loadgen.test_capacity_search import ModelServer, knee_at
    clock = iter(range(0, 1000, 5))

    def sampler() -> dict:
        t = next(clock)
        return sample(float(t), {"catalog-1": (0.2 * t, 0.25)}, loadgen=0.1 * t, machine=t)

    base = RunConfig(target="http://127.0.0.1:1", slo={"p99": 250.0})
    result = capacity_search(base, Workload(1, ["p"], [("c", 1)], 1), 300.0, 1.3, 5000, 10, 1, 5.0,
                             printer=lambda line: None, pause=0, run_step=ModelServer(knee_at(450.0)),
                             settle_target=lambda: 0.0, cpu_sampler=sampler)
    assert all(s["cpu"]["used_cpus"] == 0.2 and s["cpu"]["available_cpus"] == 0.25 for s in result["steps"])
    assert result["knee"]["cpu"]["loadgen_cpus"] == 0.1


def test_the_local_sampler_reads_limited_replicas_from_their_cgroup_and_others_from_their_process_tree(tmp_path):
    from stack.cgroups import CpuLimit
    proc = tmp_path / "proc"
    write_proc(proc, 10, 1, 5 * TICK, 0)  # catalog-1, in a cgroup with cpuacct
    write_proc(proc, 20, 1, TICK, 0)  # user-1, unlimited: master
    write_proc(proc, 21, 20, 2 * TICK, 0)  # its worker
    write_proc(proc, 30, 1, 0, 0)  # nginx master
    write_proc(proc, 31, 30, 3 * TICK, 0)
    write_proc(proc, 32, 30, TICK, 0)
    write_proc(proc, 40, 1, 2 * TICK, TICK)  # memcached
    (proc / "stat").write_text(f"cpu  {10 * TICK} 0 0 {5 * TICK} 0 {TICK} {2 * TICK} 0 0 0\n")
    group = tmp_path / "cg"
    group.mkdir()
    (group / "cpuacct.usage").write_text("4000000000")
    replica = SimpleNamespace
    stack = SimpleNamespace(
        replicas={"catalog-1": replica(name="catalog-1", service="catalog", proc=replica(pid=10),
                                       cpu=CpuLimit(0.25, str(group), True, "cgroup v1")),
                  "user-1": replica(name="user-1", service="user", proc=replica(pid=20), cpu=CpuLimit(None))},
        infra={"gateway": {"proc": {"pid": 30}}, "memcached": {"proc": {"pid": 40}}})
    found = platform.stack_cpu_sampler(stack, "catalog", proc)()
    assert found["replicas"] == {"catalog-1": {"cpu_s": 4.0, "method": "cgroup v1 cpuacct.usage", "periods": None,
                                               "throttled": None, "quota_cpus": 0.25}}
    assert found["others"]["user-1"]["cpu_s"] == 3.0 and found["others"]["user-1"]["quota_cpus"] is None
    assert found["gateway"] == {"cpu_s": 4.0, "workers": 2} and found["machine"] == 13.0
    assert found["servers"] == {"memcached": 3.0} and found["interrupts"] == 3.0


def test_the_most_any_step_served_is_compared_beside_the_answer():
    one = point(1, 286.0, usage(0.24))
    one["capacity"]["steps"] = [{"throughput_rps": r} for r in (183.0, 356.1, 385.1, 286.0)]
    four = point(4, 1392.0, usage(0.9, available=1.0))
    four["capacity"]["steps"] = [{"throughput_rps": r} for r in (715.0, 1430.3, 1392.0)]
    summary = scale_summary([one, four])
    assert (one["peak_rps"], four["peak_rps"]) == (385.1, 1430.3)
    assert summary["peak_speedup"] == round(1430.3 / 385.1, 3)
    assert "the most any step served, within the SLO or not: 1430 vs 385 req/s, 3.71×" in summary["verdict"]


def test_a_baseline_whose_search_settled_below_its_limit_says_so_instead_of_blaming_latency():
    one = point(1, 165.7, usage(0.17))
    one["capacity"].update(
        answer={"rate": 165.7}, warnings=["the X-Cache hit ratio fell from 100% to 77% during the search (worst at "
                                          "289.47/s, re-check; 1 step(s) below 95%): cached entries expired"],
        steps=[{"rate": r, "verdict": v, "throughput_rps": r} for r, v in
               ((165.7, "PASS"), (323.6, "PASS"), (404.5, "FAIL"), (289.47, "PASS"), (165.7, "PASS"))])
    four = point(4, 1369.7, usage(0.91, available=1.0))
    summary = scale_summary([one, four])
    check = summary["baseline"]
    assert check["limited_by"] == (
        "its search, whose answer (165.7/s) fell below rates that passed once but not again (up to 323.6/s); "
        "cache misses mid-search (the X-Cache hit ratio fell from 100% to 77% during the search (worst at "
        "289.47/s, re-check; 1 step(s) below 95%))")
    assert check["text"].startswith("1 replica(s) used 0.17 of 0.25 CPU available (68%) at the answer")
    assert "not super-linear scaling: the 1-replica point was held back by its search" in summary["verdict"]
    assert "latency, not CPU" not in summary["verdict"]


def test_a_one_replica_point_without_capacity_gives_no_speed_up_and_says_why():
    points = [point(1, 0.0, None), point(2, 300.0, None)]
    points[0]["capacity"]["verdict"] = "No capacity: no rate met the SLO twice. 100/s met it once."
    summary = scale_summary(points)
    assert summary["speedup"] is None
    assert summary["verdict"].startswith("No speed-up can be computed: the 1-replica point has no capacity")
    assert "no rate met the SLO twice" in summary["verdict"]
    caption = scale_caption(points)
    assert "no throughput within the SLO" in caption and "efficiency" not in caption
