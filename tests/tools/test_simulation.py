"""The benchmark's closed-loop model (bench/simulation.py), stepped by hand
on a ManualClock: agents booting into nodes, jobs arriving and taking
executors, the idle and old-AMI policy of the dump, builds killed with their
instance, and the seeded trace."""

import json

import simulation
from simulation import ManualClock, Simulation, check_trace

JOBS = [{"at_seconds": 10, "job": "app/build", "label": "dev", "duration_seconds": 100},
        {"at_seconds": 20, "job": "app/e2e", "label": "dev_spot", "duration_seconds": 50,
         "parameters": {"BRANCH": "main"}}]


def agent(instance_id, state, labels, ip, ami="ami-new", spot=False):
    """A DescribeInstances entry of one of our agents."""
    data = {"slave_labels": labels, "num_of_executors": 1}
    entry = {"InstanceId": instance_id, "State": {"Name": state}, "ImageId": ami,
             "PrivateIpAddress": ip, "InstanceType": "t2.small",
             "Tags": [{"Key": "slave_data", "Value": json.dumps(data)}]}
    if spot:
        entry["InstanceLifecycle"] = "spot"
    return entry


def at(sim, clock, seconds, *described):
    """Move to `seconds`; fold the dev env's agents in if given; advance."""
    clock.set(seconds)
    if described:
        sim.observe("dev", list(described))
    sim.advance()


def nodes(dump):
    return {n["slaveName"]: n for n in dump["slave_queue"]}


def test_agents_boot_into_nodes_that_run_the_queue():
    clock = ManualClock()
    sim = Simulation(["dev"], check_trace(JOBS), clock, boot_delay=60, idle_minutes=45)
    old = agent("i-1", "running", "dev", "10.0.0.1")
    sim.observe("dev", [old])               # the baseline: booted long ago
    sim.end_poll(0.01)
    dump = sim.dump([])
    assert list(nodes(dump)) == ["dev-10.0.0.1"] and dump["build_queue"] == []
    at(sim, clock, 25)
    dump = sim.dump([])
    assert nodes(dump)["dev-10.0.0.1"]["busy_executors"] == "1"      # app/build runs
    assert [(q["jobName"], q["parameters"]) for q in dump["build_queue"]] == [
        ("app/e2e", "\nBRANCH=main")]                                # no dev_spot node yet
    new = agent("i-2", "pending", "dev_spot", "10.0.0.2", spot=True)
    at(sim, clock, 30, old, new)
    at(sim, clock, 89, old, dict(new, State={"Name": "running"}))
    assert "dev-10.0.0.2" not in nodes(sim.dump([]))                 # still booting
    at(sim, clock, 95)
    assert sim.dump([])["build_queue"] == []
    # A job is placed when the model is advanced past its arrival.
    jobs = {j["job"]: j for j in sim.stats()["jobs"]}
    assert (jobs["app/build"]["enqueued"], jobs["app/build"]["started"]) == (10, 25)
    assert jobs["app/build"]["node"] == "dev-10.0.0.1"
    assert (jobs["app/e2e"]["started"], jobs["app/e2e"]["node"]) == (95, "dev-10.0.0.2")
    assert jobs["app/e2e"]["first_dump"] == 25


def test_idle_and_old_ami_nodes_are_marked_to_go():
    clock = ManualClock()
    sim = Simulation(["dev"], [], clock)
    sim.observe("dev", [agent("i-1", "running", "dev", "10.0.0.1"),
                        agent("i-2", "running", "dev", "10.0.0.2", ami="ami-old")])
    sim.end_poll(0.01)
    dump = sim.dump(["ami:dev=ami-new", "idle_minutes=1"])
    assert {n: (e["isOffLine"], e["terminate_me"]) for n, e in nodes(dump).items()} == {
        "dev-10.0.0.1": ("false", "false"), "dev-10.0.0.2": ("true", "true")}
    clock.set(61)
    dump = sim.dump(["ami:dev=ami-new", "idle_minutes=1"])
    assert nodes(dump)["dev-10.0.0.1"]["terminate_me"] == "true"
    assert any("idle 1 min > 1" in m for m in dump["messages"]), dump["messages"]


def test_a_build_dies_with_its_instance_and_billing_counts_a_minute_minimum():
    clock = ManualClock()
    sim = Simulation(["dev"], check_trace(JOBS[:1]), clock)
    running = agent("i-1", "running", "dev", "10.0.0.1")
    sim.observe("dev", [running])
    sim.end_poll(0.01)
    at(sim, clock, 30)
    at(sim, clock, 40, dict(running, State={"Name": "terminated"}))
    stats = sim.stats()
    assert [j["killed"] for j in stats["jobs"]] == [40]
    assert stats["summary"]["killed"] == 1 and stats["summary"]["nodes"] == 0
    (instance,) = stats["instances"]
    assert instance["active_seconds"] == 40 and instance["billed_seconds"] == 60
    assert stats["summary"]["instances_preexisting"] == 1


def test_trace_is_seeded():
    mix = {"dev": (0.7, 60, ["a", "b"]), "dev_spot": (0.3, 120, ["c"])}
    first = simulation.generate_trace(40, 10, 7, mix)
    assert first == simulation.generate_trace(40, 10, 7, mix)
    assert first != simulation.generate_trace(40, 10, 8, mix)
    jobs = check_trace(first)
    assert len(jobs) == 40 and all(0 <= j["at"] <= 600 for j in jobs)
    assert [j["at"] for j in jobs] == sorted(j["at"] for j in jobs)


def test_the_soaks_faults_an_agent_that_never_boots_and_a_build_that_slips_in():
    clock = ManualClock()
    sim = Simulation(["dev"], [], clock, boot_delay=60, idle_minutes=1)
    sim.observe("dev", [agent("i-1", "running", "dev", "10.0.0.1")])
    sim.end_poll(0.01)
    assert sim.fault({"no_boot": 1, "slip": 1}) == {"no_boot": 1, "slip": 1}
    at(sim, clock, 10, agent("i-1", "running", "dev", "10.0.0.1"),
       agent("i-2", "running", "dev", "10.0.0.2"))
    at(sim, clock, 200)
    assert "dev-10.0.0.2" not in nodes(sim.dump([])), "i-2 never registers"
    # i-1 idles past the limit: the dump that retires it sees a build land
    # on it just after, so the next dump shows it busy.
    dump = sim.dump([])
    assert nodes(dump)["dev-10.0.0.1"]["terminate_me"] == "true"
    sim.slip(dump)
    assert nodes(sim.dump([]))["dev-10.0.0.1"]["busy_executors"] == "1"
    assert [j["job"] for j in sim.stats()["jobs"] if j.get("slipped")] == ["soak/slipped"]
    try:
        sim.fault({"boom": 1})
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown fault is refused")


def test_an_interruption_wave_warns_spot_agents_retries_their_killed_builds_and_times_the_replacement():
    clock = ManualClock()
    jobs = [{"at_seconds": 5, "job": "app/e2e", "label": "dev_spot", "duration_seconds": 300},
            {"at_seconds": 40, "job": "app/e2e2", "label": "dev_spot", "duration_seconds": 30}]
    sim = Simulation(["dev"], check_trace(jobs), clock, boot_delay=60, idle_minutes=45)
    spot = agent("i-1", "running", "dev_spot", "10.0.0.1", spot=True)
    sim.observe("dev", [spot, agent("i-2", "running", "dev", "10.0.0.2")])
    sim.end_poll(0.01)
    at(sim, clock, 5)                        # app/e2e starts on i-1
    at(sim, clock, 10)
    assert sim.interrupt(0.2, seed=1) == [("dev", "i-1")], "at least one, and only spot agents"
    assert sim.interrupt(0.2, seed=1) == [], "an agent is warned once"
    # The manager takes the node offline: the next build waits.
    assert sim.offline_node("dev-10.0.0.1", "reclaimed") and not sim.offline_node("dev-x", "y")
    at(sim, clock, 45)
    assert [q["jobName"] for q in sim.dump([])["build_queue"]] == ["app/e2e2"]
    # EC2 reclaims it: the running build is killed and queued again; a new
    # agent of the label registers 60 s after it appears.
    at(sim, clock, 130, agent("i-2", "running", "dev", "10.0.0.2"),
       agent("i-3", "running", "dev_spot", "10.0.0.3", spot=True))
    at(sim, clock, 200)
    summary = sim.stats()["summary"]
    assert (summary["warned"], summary["killed_by_reclaim"], summary["retried"]) == (1, 1, 1)
    # app/e2e started before the warning, app/e2e2 and the retry on i-3.
    assert (summary["started_on_warned"], summary["started_on_warned_after_offline"]) == (0, 0)
    assert summary["warning_to_offline"] == [0.0]
    assert summary["replacement_online"] == [180.0]
    started = {j["job"]: j["instance"] for j in sim.stats()["jobs"] if j["started"] is not None}
    assert started["app/e2e2"] == "i-3"


def test_the_boot_model_brings_a_started_agent_online_sooner_than_a_created_one():
    clock = ManualClock()
    boot = simulation.BootModel(create=(15, 60), start=(10, 15))
    sim = Simulation(["dev"], [], clock, boot=boot)
    stopped = agent("i-1", "stopped", "dev", "10.0.0.1")
    sim.observe("dev", [stopped])
    sim.end_poll(0.01)
    created = agent("i-2", "running", "dev", "10.0.0.2")
    at(sim, clock, 100, dict(stopped, State={"Name": "running"}), created)
    at(sim, clock, 124)
    assert list(nodes(sim.dump([]))) == [], "a start takes 10 + 15 s"
    at(sim, clock, 125)
    assert list(nodes(sim.dump([]))) == ["dev-10.0.0.1"]
    at(sim, clock, 174)
    assert "dev-10.0.0.2" not in nodes(sim.dump([])), "a create takes 15 + 60 s"
    at(sim, clock, 175)
    assert "dev-10.0.0.2" in nodes(sim.dump([]))
    boots = {i["id"]: i["boots"] for i in sim.stats()["instances"]}
    assert boots == {"i-1": [["start", 100, 110, 125]], "i-2": [["create", 100, 115, 175]]}
    summary = sim.stats()["summary"]["boots"]
    assert (summary["create"]["online_median"], summary["start"]["online_median"]) == (75, 25)


def test_the_boot_jitter_is_seeded_and_bounded():
    draws = [simulation.BootModel(jitter=0.2, seed=3).draw("create") for _ in range(2)]
    assert draws[0] == draws[1], "one seed, one sequence"
    assert draws[0] != simulation.BootModel(jitter=0.2, seed=4).draw("create")
    model = simulation.BootModel(jitter=0.2, seed=3)
    for _ in range(200):
        running, online = model.draw("start")
        assert 8 <= running <= 12 and 12 <= online <= 18
    assert simulation.BootModel.fixed(60).draw("start") == (0, 60)


def test_usage_counts_minutes_booting_busy_idle_and_stopped():
    clock = ManualClock()
    jobs = [{"at_seconds": 90, "job": "app/build", "label": "dev", "duration_seconds": 60}]
    sim = Simulation(["dev"], check_trace(jobs), clock, boot_delay=60)
    sim.observe("dev", [])
    sim.end_poll(0.01)
    running = agent("i-1", "running", "dev", "10.0.0.1")
    at(sim, clock, 0, running)
    at(sim, clock, 60)                  # booting 0–60
    at(sim, clock, 90)                  # idle 60–90
    at(sim, clock, 150)                 # busy 90–150
    at(sim, clock, 180)                 # idle 150–180
    at(sim, clock, 180, dict(running, State={"Name": "stopped"}))
    at(sim, clock, 300)                 # stopped 180–300
    (instance,) = sim.stats()["instances"]
    assert instance["usage"] == {"booting": 60, "busy": 60, "idle": 60, "stopped": 120}
    usage = sim.stats()["summary"]["usage_minutes"]
    assert (usage["paid"], usage["stopped"]) == (3, 2)
    assert sim.stats()["summary"]["usage_minutes_by_label"]["dev"] == usage


def test_a_working_day_follows_its_shape_and_is_seeded():
    shape = [(8, 0.2), (10, 1.0), (12, 1.0), (12.5, 0.2), (13.5, 0.2), (14, 1.0), (17, 0.0)]
    pushes = {"dev": (1.0, [("dev", 1.0, 120, ["app/build"]), ("dev_spot", 0.5, 300, ["e2e"])])}
    day = simulation.generate_day_trace(8, 9, 5, 2.0, shape, pushes)
    assert day == simulation.generate_day_trace(8, 9, 5, 2.0, shape, pushes)
    assert day != simulation.generate_day_trace(8, 9, 6, 2.0, shape, pushes)
    jobs = check_trace(day)
    assert {j["label"] for j in jobs} == {"dev", "dev_spot"}

    def per_hour(start):
        return sum(start * 3600 <= j["at"] < (start + 1) * 3600 for j in jobs)
    # 10–11 (rate 1) against the lunch hour 12:30–13:30 (0.2) and 08–09.
    assert per_hour(2) > 2 * per_hour(4.5) and per_hour(2) > 2 * per_hour(0)
    assert simulation.day_rate(12.75, shape) == 0.2 and simulation.day_rate(18, shape) == 0
