"""The soak's invariant checker (bench/invariants.py) on made-up states: for
each invariant, a state that breaks it is reported and the nearest state
that keeps it is not. No process is started."""

import json

import invariants

SLAVE = "jslave-in-house"
MASTER = "http://jenkins.invalid/"
NEW, OLD = "ami-new", "ami-old"
DEV, PROD = "us-east-2", "us-west-2"
IPS = {}        # instance id -> its private IP, one each


def checker(**overrides):
    labels = {"dev": {"env": "dev", "spot": False, "executors": 1},
              "dev_spot": {"env": "dev", "spot": True, "executors": 1},
              "dev_shared": {"env": "dev", "spot": False, "executors": 5}}
    settings = dict(envs={"dev": {"region": DEV, "master": MASTER},
                          "prod": {"region": PROD, "master": MASTER}},
                    slave_name=SLAVE, on_demand_cap=2, spot_cap=2, labels=labels,
                    zombie_limit=60.0, starve_passes=3, zombie_passes=3)
    settings.update(overrides)
    c = invariants.Checker(invariants.CheckConfig(**settings))
    c.run({"number": 1, "start": 0.0, "end": None, "killed": False, "ami": {"dev": NEW, "prod": NEW}})
    return c


def agent(instance_id, state="running", labels="dev", spot=False, name=SLAVE, key="jenkins.cloud",
          master=MASTER, image=NEW, ip=None, launched=0.0):
    tags = {"slave_data": json.dumps({"slave_labels": labels, "jenkins_url": master}),
            "jenkins_master": master}
    if name is not None:
        tags["Name"] = name
    return {"id": instance_id, "state": state, "tags": tags, "spot": spot, "key": key,
            "image": image, "ip": ip or IPS.setdefault(instance_id, f"10.1.1.{len(IPS) + 1}"),
            "launch_time": launched}


def node(name, instance, busy=0, idle=1, offline=False, terminate_me=False):
    return {"slaveName": name, "description": f"Created by Swarm InstanceID={instance} AmiId={NEW}",
            "busy_executors": str(busy), "ope_idle_count": str(idle),
            "isOffLine": str(offline).lower(), "terminate_me": str(terminate_me).lower()}


def dump(c, t, index, queue=(), nodes=(), whole=True, describe=True):
    """A pass: the dump at `t` and each env's describe just before it."""
    c.dump({"index": index, "time": t, "whole": whole, "dump": {
        "build_queue": [{"queueId": str(q), "jobName": f"job-{q}", "labels": label}
                        for q, label in queue],
        "slave_queue": list(nodes)}})
    if describe:
        for region in (DEV, PROD):
            c.call({"time": t - 0.1, "end": t - 0.05, "region": region,
                    "action": "DescribeInstances", "status": 200, "ids": [], "made": []})


def call(c, t, action, ids=(), made=(), status=200, region=DEV):
    c.call({"time": t, "end": t + 0.01, "region": region, "action": action, "status": status,
            "ids": list(ids), "made": list(made)})


def settle(c, t, dev=(), prod=()):
    """moto read at `t` (what the checker needs before it judges), judged
    once the calls before it are in."""
    c.snapshot("dev", t, list(dev), complete=True)
    c.snapshot("prod", t, list(prod), complete=True)
    c.evaluate(t + c.cfg.margin)


def found(c, invariant):
    return [v for v in c.violations if v["invariant"] == invariant]


# --- caps -----------------------------------------------------------------------


def test_more_agents_than_the_on_demand_cap_is_a_violation():
    c = checker()
    settle(c, 1, dev=[agent("i-1"), agent("i-2", state="stopped"), agent("i-3", state="pending")])
    assert len(found(c, "cap_exceeded")) == 1, c.violations
    assert "3 on-demand" in found(c, "cap_exceeded")[0]["detail"]


def test_foreign_and_spot_instances_do_not_count_against_the_on_demand_cap():
    c = checker()
    settle(c, 1, dev=[agent("i-1"), agent("i-2"), agent("i-3", name=None),
                      agent("i-4", master="https://other/"), agent("i-5", key="other"),
                      agent("i-6", spot=True), agent("i-7", state="terminated")])
    assert c.violations == [], c.violations


def test_the_spot_cap_is_counted_apart():
    c = checker()
    settle(c, 1, dev=[agent(f"i-{n}", labels="dev_spot", spot=True) for n in range(1, 4)])
    assert [v["detail"] for v in found(c, "cap_exceeded")] == ["3 spot agents of ours, cap 2"]


def test_moto_read_while_a_make_room_termination_and_its_launch_go_is_within_the_cap():
    # The read shows the launch and not the stopped agent it replaced; the
    # calls come in after it: judged together, the env is at its cap.
    c = checker()
    settle(c, 0.5, dev=[agent("i-1"), agent("i-old")])
    call(c, 9.0, "StopInstances", ids=["i-old"])
    c.snapshot("dev", 10.2, [agent("i-1"), agent("i-new", launched=10.1)], complete=True)
    c.snapshot("prod", 10.2, [], complete=True)
    call(c, 10.0, "TerminateInstances", ids=["i-old"])
    call(c, 10.1, "RunInstances", made=["i-new"])
    c.evaluate(15)
    assert c.violations == [], c.violations
    assert c.evidence["cap_reached_readings"] >= 1


# --- busy -------------------------------------------------------------------------


def test_stopping_an_instance_whose_node_was_busy_is_a_violation():
    c = checker()
    settle(c, 0.5, dev=[agent("i-1")])
    dump(c, 10, 1, nodes=[node("dev-a", "i-1", busy=1, idle=0, offline=True)])
    call(c, 11, "StopInstances", ids=["i-1"])
    settle(c, 20, dev=[agent("i-1", state="stopped")])
    assert len(found(c, "busy_stopped")) == 1, c.violations


def test_stopping_an_idle_node_or_one_busy_only_in_a_spoiled_dump_is_not():
    c = checker()
    settle(c, 0.5, dev=[agent("i-1"), agent("i-2")])
    dump(c, 10, 1, nodes=[node("dev-a", "i-1", offline=True, terminate_me=True),
                          node("dev-b", "i-2", offline=True, terminate_me=True)])
    # A dump cut short names i-2 busy: the manager could not read it.
    dump(c, 12, 2, nodes=[node("dev-b", "i-2", busy=1)], whole=False)
    call(c, 13, "StopInstances", ids=["i-1"])
    call(c, 13.5, "TerminateInstances", ids=["i-2"])
    settle(c, 20, dev=[agent("i-1", state="stopped"), agent("i-2", state="terminated")])
    assert found(c, "busy_stopped") == [], c.violations
    assert c.evidence["stops_checked"] == 2


def test_a_killed_build_is_a_violation_unless_it_slipped_in_after_the_dump():
    c = checker()
    settle(c, 1)
    c.finish(2, sim_jobs=[{"job": "a", "queue_id": 1, "killed": 5.0, "node": "n", "instance": "i-1"},
                          {"job": "soak/slipped", "queue_id": 2, "killed": 6.0, "slipped": True}])
    assert len(found(c, "busy_stopped")) == 1 and len(c.race_stops) == 1, c.violations


# --- one item, one agent --------------------------------------------------------------


def test_two_agents_for_one_queued_item_is_a_double_agent():
    c = checker()
    settle(c, 0.5)
    dump(c, 10, 1, queue=[(1, "dev")])
    call(c, 10.5, "RunInstances", made=["i-a"])
    call(c, 10.6, "RunInstances", made=["i-b"])
    dump(c, 12, 2, queue=[(1, "dev")])
    settle(c, 20, dev=[agent("i-a", launched=10.5), agent("i-b", launched=10.6)])
    assert len(found(c, "double_agent")) == 1, c.violations
    assert "2 new agent(s) for 1 queued item(s) with capacity for 0" in found(c, "double_agent")[0]["detail"]


def test_an_agent_for_an_item_already_covered_by_a_booting_one_is_a_double_agent():
    c = checker()
    settle(c, 0.5, dev=[agent("i-a", launched=5)])
    dump(c, 10, 1, queue=[(1, "dev")])       # i-a boots: no node yet
    call(c, 10.5, "StartInstances", ids=["i-s"])
    dump(c, 12, 2, queue=[(1, "dev")])
    settle(c, 20, dev=[agent("i-a", launched=5), agent("i-s", launched=10.5)])
    assert len(found(c, "double_agent")) == 1, c.violations


def test_one_agent_per_uncovered_item_and_one_shared_agent_per_five_items_is_fine():
    c = checker(on_demand_cap=10)
    settle(c, 0.5, dev=[agent("i-busy", launched=0)])
    # The old agent's node is busy: two dev items need two agents; seven
    # shared items need two shared agents.
    dump(c, 10, 1, queue=[(1, "dev"), (2, "dev")] + [(q, "dev_shared") for q in range(3, 10)],
         nodes=[node("dev-x", "i-busy", busy=1, idle=0)])
    for n in range(4):   # two dev agents, then two shared ones (their tags below)
        call(c, 10.5 + n / 10, "RunInstances", made=[f"i-{n + 10}"])
    dump(c, 12, 2)
    settle(c, 20, dev=[agent("i-busy"), agent("i-10", launched=10.5), agent("i-11", launched=10.6),
                       agent("i-12", labels="dev_shared", launched=10.7),
                       agent("i-13", labels="dev_shared", launched=10.8)])
    assert c.violations == [], c.violations
    assert c.evidence["agents_made"] == 4


def test_an_agent_stuck_past_the_zombie_limit_is_no_capacity():
    c = checker()
    # Launched 100 s before the dump, no node: the manager terminates it
    # and creates for the item in the same pass.
    settle(c, 0.5, dev=[agent("i-z", launched=-90)])
    dump(c, 10, 1, queue=[(1, "dev")], nodes=[node("dev-q", "i-q")])
    call(c, 10.4, "TerminateInstances", ids=["i-z"])
    call(c, 10.5, "RunInstances", made=["i-n"])
    dump(c, 12, 2)
    settle(c, 20, dev=[agent("i-n", launched=10.5)])
    assert found(c, "double_agent") == [], c.violations


# --- foreign ---------------------------------------------------------------------------


def test_touching_an_instance_that_is_not_ours_is_a_violation():
    c = checker()
    settle(c, 0.5, dev=[agent("i-1", name=None), agent("i-2", master="https://other/"),
                        agent("i-3", key="someone.else"), agent("i-4", name="ci-runner"),
                        agent("i-5")])
    call(c, 1, "StopInstances", ids=["i-1"])
    call(c, 2, "TerminateInstances", ids=["i-2"])
    call(c, 3, "StartInstances", ids=["i-3"])
    call(c, 4, "CreateTags", ids=["i-4"])
    call(c, 5, "StopInstances", ids=["i-5"])
    settle(c, 20, dev=[agent("i-5", state="stopped")])
    reasons = [v["detail"] for v in found(c, "foreign_touched")]
    assert len(reasons) == 4, reasons
    assert "Name tag None" in reasons[0] and "jenkins_master" in reasons[1] and "key pair" in reasons[2]


def test_an_agent_of_ours_from_before_the_master_tag_is_ours():
    c = checker()
    python_era = agent("i-1")
    del python_era["tags"]["jenkins_master"]
    settle(c, 0.5, dev=[python_era])
    call(c, 1, "CreateTags", ids=["i-1"])
    settle(c, 20, dev=[python_era])
    assert c.violations == [], c.violations



def test_a_foreign_instance_stays_foreign_after_the_manager_tags_it_ours():
    c = checker()
    settle(c, 0.5, dev=[agent("i-1", master="https://other/")])
    call(c, 1, "CreateTags", ids=["i-1"])
    call(c, 2, "StopInstances", ids=["i-1"])
    # moto now shows our master's tag on it: the stray tag must not launder the stop.
    settle(c, 20, dev=[agent("i-1", state="stopped")])
    assert [v["detail"].split()[0] for v in found(c, "foreign_touched")] == ["CreateTags", "StopInstances"], \
        c.violations

# --- starvation -----------------------------------------------------------------------------


def passes(c, count, queue, start=10, nodes=(), dev=()):
    for n in range(count):
        dump(c, start + 2 * n, n + 1, queue=queue, nodes=nodes)
    settle(c, start + 2 * count + 10, dev=dev)
    dump(c, start + 2 * count, count + 1)


def test_an_item_beyond_capacity_three_clean_passes_with_room_is_starved():
    c = checker()
    settle(c, 0.5)
    passes(c, 4, [(1, "dev")])
    settle(c, 100)
    assert len(found(c, "starved")) == 1, c.violations


def test_an_item_at_the_cap_or_in_faulted_passes_is_not_starved():
    c = checker()
    full = [agent("i-1", state="stopped", labels="dev_spot", spot=True),
            agent("i-2", labels="dev_spot", spot=True)]
    settle(c, 0.5, dev=full)
    # dev_spot is at its spot cap (stopped spot agents cannot be started).
    full[0]["labels"] = "x"
    passes(c, 4, [(1, "dev_spot")], nodes=[node("d-2", "i-2", busy=1, idle=0)], dev=full)
    c2 = checker()
    settle(c2, 0.5)
    c2.fault({"kind": "ec2_500", "start": 0, "end": 1000, "envs": ["dev"]})
    passes(c2, 4, [(1, "dev")])
    settle(c2, 100)
    assert found(c, "starved") == [] and found(c2, "starved") == [], (c.violations, c2.violations)


def test_an_item_with_a_booting_agent_is_not_starved():
    c = checker()
    booting = [agent("i-1", launched=9)]
    settle(c, 0.5, dev=booting)
    passes(c, 4, [(1, "dev")], dev=booting)
    settle(c, 100, dev=booting)
    assert found(c, "starved") == [], c.violations


# --- zombies ------------------------------------------------------------------------------------


def test_an_agent_without_a_node_past_the_zombie_limit_is_a_violation():
    c = checker()
    zombie = [agent("i-z", launched=-200)]
    settle(c, 0.5, dev=zombie)
    passes(c, 4, [], nodes=[node("dev-q", "i-q")], dev=zombie)
    settle(c, 100, dev=zombie)
    assert len(found(c, "zombie_outlived")) == 1, c.violations


def test_no_zombie_hunt_is_owed_while_a_busy_node_maps_to_no_agent_the_manager_sees():
    # prod's describe fails: the busy node of a prod agent matches nothing
    # the manager sees, which holds its hunt up in every env.
    c = checker()
    zombie = [agent("i-z", launched=-200)]
    busy_prod = [agent("i-p", ip="10.2.1.9")]
    settle(c, 0.5, dev=zombie, prod=busy_prod)
    for n in range(4):
        t = 10 + 2 * n
        dump(c, t, n + 1, nodes=[node("prod-10.2.1.9", "i-p", busy=1, idle=0)], describe=False)
        call(c, t - 0.1, "DescribeInstances")                        # dev only
        call(c, t - 0.1, "DescribeInstances", status=500, region=PROD)
    dump(c, 18, 5)
    settle(c, 100, dev=zombie, prod=busy_prod)
    assert found(c, "zombie_outlived") == [], c.violations


def test_an_agent_with_a_node_or_young_enough_is_no_zombie():
    c = checker()
    fleet = [agent("i-a", launched=-200), agent("i-b", launched=0)]
    settle(c, 0.5, dev=fleet)
    passes(c, 4, [], nodes=[node("dev-a", "i-a")], dev=fleet)
    settle(c, 100, dev=fleet)
    assert found(c, "zombie_outlived") == [], c.violations


# --- old AMI ---------------------------------------------------------------------------------------


def first_passes(c, run_start, described=True):
    """A run's first two passes (the first runs the inventory)."""
    c.command({"time": run_start + 0.5, "argv": ["groovy", "="]})
    if described:
        call(c, run_start + 0.4, "DescribeInstances")
    c.command({"time": run_start + 2.5, "argv": ["groovy", "="]})


def test_a_stopped_agent_on_an_old_ami_that_outlives_a_runs_first_pass_is_a_violation():
    c = checker()
    old = [agent("i-o", state="stopped", image=OLD)]
    settle(c, 0.1, dev=old)
    first_passes(c, 0)
    settle(c, 20, dev=old)
    assert len(found(c, "old_ami_outlived")) == 1, c.violations


def test_no_inventory_is_owed_when_the_first_pass_could_not_describe_the_env():
    c = checker()
    old = [agent("i-o", state="stopped", image=OLD)]
    settle(c, 0.1, dev=old)
    first_passes(c, 0, described=False)
    settle(c, 20, dev=old)
    assert c.violations == [], c.violations


def test_a_read_just_before_the_call_that_ends_an_agent_still_counts():
    # moto read at 0.5, the first pass terminates the agent at 1.0: it was
    # stopped on an old AMI until then (the inventory was owed and done).
    c = checker()
    old = [agent("i-o", state="stopped", image=OLD)]
    c.snapshot("dev", 0.5, old, complete=True)
    c.snapshot("prod", 0.5, [], complete=True)
    call(c, 1.0, "TerminateInstances", ids=["i-o"])
    first_passes(c, 0)
    settle(c, 20)
    assert c.instances["i-o"].state_at(0.7) == "stopped", c.instances["i-o"].transitions
    assert c.violations == [] and c.evidence["old_ami_checks"] == 1, c.violations


def test_one_terminated_in_the_first_pass_or_on_the_current_ami_is_fine():
    c = checker()
    fleet = [agent("i-o", state="stopped", image=OLD), agent("i-n", state="stopped")]
    settle(c, 0.1, dev=fleet)
    first_passes(c, 0)
    call(c, 1.0, "TerminateInstances", ids=["i-o"])
    settle(c, 20, dev=[fleet[1]])
    assert c.violations == [] and c.evidence["old_ami_checks"] == 1, c.violations


# --- SQS -----------------------------------------------------------------------------------------------


def test_sqs_requests_built_twice_lost_or_refused_are_violations():
    c = checker()
    settle(c, 0.1)
    for request in ("r1", "r2", "r3"):
        c.sqs_sent(request, 1.0)
    build = ["build", "soak-remote", "-p"]
    c.command({"time": 2, "argv": build + ["REQUEST_ID=r1"]})
    c.command({"time": 3, "argv": build + ["REQUEST_ID=r2"]})
    c.command({"time": 4, "argv": build + ["REQUEST_ID=r2"]})
    c.command({"time": 5, "argv": ["safe-restart"]})
    c.command({"time": 6, "argv": ["groovy", "=", "ami-1", "idle_minutes=10"]})
    c.command({"time": 7, "argv": ["groovy", "soak-remote"]})
    c.finish(10, drained_after=9)
    assert [v["invariant"] for v in c.violations] == ["sqs_built_twice", "sqs_refused_ran", "sqs_refused_ran",
                                                      "sqs_lost"], c.violations
    assert "groovy soak-remote" in found(c, "sqs_refused_ran")[1]["detail"]
    assert "r3" in found(c, "sqs_lost")[0]["detail"]


def test_a_request_built_again_after_a_kill_during_its_first_build_is_explained():
    c = checker()
    settle(c, 0.1)
    c.sqs_sent("r1", 1.0)
    c.fault({"kind": "kill", "start": 2.05, "end": 2.05, "envs": ["*"], "kill": True})
    build = ["build", "soak-remote", "-p", "REQUEST_ID=r1"]
    c.command({"time": 2.0, "finished": 2.1, "argv": build})
    c.command({"time": 40.0, "finished": 40.1, "argv": build})
    c.finish(50)
    assert c.violations == [] and c.evidence["sqs_rebuilt_after_kill_mid_build"] == 1, c.violations


# --- interruption events ---------------------------------------------------------------


def test_a_build_on_a_warned_agent_a_whole_pass_after_the_warning_is_a_violation():
    c = checker()
    spot = agent("i-w", labels="dev_spot", spot=True)
    settle(c, 0.5, dev=[spot])
    c.warned("i-w", "dev", 10.0)
    n = node("dev-" + spot["ip"], "i-w")
    for index, t in enumerate((15.0, 20.0, 25.0), start=1):
        dump(c, t, index, nodes=[n])
    settle(c, 30, dev=[spot])
    jobs = [{"job": "race", "queue_id": 1, "instance": "i-w", "started_at_real": 21.0},
            {"job": "late", "queue_id": 2, "instance": "i-w", "started_at_real": 26.0},
            {"job": "before", "queue_id": 3, "instance": "i-w", "started_at_real": 9.0,
             "killed": 40.0, "killed_at_real": 40.0}]
    c.finish(41, sim_jobs=jobs)
    assert [v["detail"].split()[1] for v in found(c, "warned_build")] == ["late"], c.violations
    assert c.evidence["warned_builds_in_the_race"] == 1
    assert found(c, "busy_stopped") == [], "a build killed by EC2's reclaim is not the manager's"


def test_a_warned_busy_agent_may_get_one_replacement_and_counts_no_capacity():
    c = checker()
    spot = agent("i-w", labels="dev_spot", spot=True)
    settle(c, 0.5, dev=[spot])
    c.warned("i-w", "dev", 9.5)
    # Its node is busy: one replacement for the build at risk is allowed.
    dump(c, 10, 1, nodes=[node("dev-" + spot["ip"], "i-w", busy=1, idle=0)])
    call(c, 10.5, "RunInstances", made=["i-r"])
    dump(c, 12, 2)
    settle(c, 20, dev=[spot, agent("i-r", labels="dev_spot", spot=True, launched=10.5)])
    assert found(c, "double_agent") == [], c.violations
    # An idle warned agent's free executor covers nothing: a queued item gets a new agent.
    c = checker()
    settle(c, 0.5, dev=[spot])
    c.rebalanced("i-w", "dev", 9.5)
    dump(c, 10, 1, queue=[(1, "dev_spot")], nodes=[node("dev-" + spot["ip"], "i-w")])
    call(c, 10.5, "RunInstances", made=["i-r"])
    dump(c, 12, 2)
    settle(c, 20, dev=[spot, agent("i-r", labels="dev_spot", spot=True, launched=10.5)])
    assert found(c, "double_agent") == [], c.violations
    # Two new agents for it are still one too many.
    call(c, 12.5, "RunInstances", made=["i-x"])
    call(c, 12.6, "RunInstances", made=["i-y"])
    dump(c, 14, 3, queue=[(2, "dev_spot")])
    settle(c, 30, dev=[spot, agent("i-r", labels="dev_spot", spot=True, launched=10.5),
                       agent("i-x", labels="dev_spot", spot=True, launched=12.5),
                       agent("i-y", labels="dev_spot", spot=True, launched=12.6)])
    assert len(found(c, "double_agent")) >= 1, c.violations
