#!/usr/bin/env python3
"""Data for scripts/demo.sh: the agents, the Jenkins scenario, the summaries.

  demo_scenario.py agents                       agents.json for moto_world.py
  demo_scenario.py scenario WORLD_JSON          scenario for the Jenkins emulator
  demo_scenario.py describe SCENARIO_JSON       the queue and nodes, briefly
  demo_scenario.py changes WORLD BEFORE AFTER   what happened to each instance
                                                (BEFORE, AFTER: moto_world.py
                                                fleet --json)
  demo_scenario.py commands COMMANDS_JSONL      what the emulator was asked

The scenario has to name instance ids, private IPs and AMI ids that only
exist once moto_world.py has launched the agents, so it is computed from the
world JSON rather than written by hand. Which agent is which is fixed by the
order of AGENTS (moto_world.py reports them in that order).
"""

import collections
import json
import sys
import time

# Agents that exist before the manager runs, and what the demo expects of them.
AGENTS = [
    # 0: the last-used node of the queued `dev` job: started, not created.
    {"env": "dev", "labels": "dev", "state": "stopped"},
    # 1: an idle node that Jenkins marked terminate_me: stopped (kept for reuse).
    {"env": "dev", "labels": "dev", "state": "running"},
    # 2: stopped on last year's AMI: never started (so the second `dev` job
    #    gets a new agent), and the inventory terminates it.
    {"env": "dev", "labels": "dev", "state": "stopped", "ami": "old"},
    # 3: an idle spot node marked terminate_me: spot agents are terminated.
    {"env": "prod", "labels": "prod_spot", "state": "running"},
]
REUSED, IDLE, OLD_AMI, IDLE_SPOT = range(len(AGENTS))
# Why each agent is in the demo, for the "what changed" summary.
ROLES = {
    REUSED: "last ran app/build: started again",
    IDLE: "idle, terminate_me: stopped for reuse",
    OLD_AMI: "stopped on the old AMI: retired",
    IDLE_SPOT: "idle spot, terminate_me: terminated",
}

# The job the manager builds every 6th pass (SPEC A8); without it in the
# scenario the emulator would answer "No such job".
GC_JOB = "util-slave-manager-garbage-collector"


def node_name(agent):
    """Swarm names a node after its env and private IP (SPEC A5.2)."""
    return f"{agent['env']}-{agent['private_ip']}"


def idle_node(agent, now_ms):
    """An idle, offline, terminate_me node in the dump's all-strings shape
    (SPEC A5.1), as the Groovy script reports it after the idle policy."""
    return {
        "slaveName": node_name(agent),
        "labels": f"[{agent['labels']}, swarm]",
        "isOffLine": "true",
        "description": (f"Created by Swarm InstanceID={agent['instance_id']} "
                        f"AmiId={agent['image_id']}"),
        "ami_id": agent["image_id"],
        "ope_idle_count": "1",
        "busy_executors": "0",
        "num_executors": "1",
        "connectTime": str(now_ms - 3 * 3600 * 1000),
        "idle_seconds": "3000",
        "terminate_me": "true",
    }


def queue_item(job, label, last_built_on="UNKNOWN", parameters="NONE"):
    return {"jobName": job, "labels": label, "lastBuiltOn": last_built_on,
            "throttleEnabled": "false", "parameters": parameters}


def scenario(world):
    agents = world["agents"]
    if len(agents) != len(AGENTS):
        raise SystemExit(f"world has {len(agents)} agents, expected {len(AGENTS)}")
    now_ms = int(time.time() * 1000)
    queue = [
        # Last built on the stopped agent 0: that one is started again.
        queue_item("app/build", "dev", node_name(agents[REUSED]),
                   "\nBRANCH=master\nBUILD_NO=0"),
        queue_item("app/integration", "dev_spot_c6i.large"),
        # Two items, one shared agent: it has 5 executors.
        queue_item("release/package", "prod_shared"),
        queue_item("release/sign", "prod_shared"),
        # Agent 0 is taken and agent 2 retired: a new on-demand agent.
        queue_item("lint", "dev"),
        # A label expression names no env: skipped.
        queue_item("docker-image", "linux && docker"),
    ]
    nodes = [idle_node(agents[IDLE], now_ms), idle_node(agents[IDLE_SPOT], now_ms)]
    messages = [f"{node['slaveName']}: idle {node['idle_seconds']} s, marked offline"
                for node in nodes]
    return {"queue": queue, "nodes": nodes, "messages": messages,
            "jobs": {GC_JOB: {"output": "Garbage collector executed: 3 freed."}}}


def describe(scenario):
    """The Jenkins side in a few lines: what is queued, which nodes exist."""
    print("queue:")
    for item in scenario["queue"]:
        last = item["lastBuiltOn"]
        line = f"  {item['jobName']:<16} label {item['labels']!r:<22}"
        if last != "UNKNOWN":
            line += f" last built on {last}"
        print(line.rstrip())
    print("nodes:")
    for node in scenario["nodes"]:
        print(f"  {node['slaveName']:<16} {node['labels']:<18} "
              f"offline={node['isOffLine']} terminate_me={node['terminate_me']}"
              f"  {node['description']}")


def changes(world, before, after):
    """One line per instance whose state changed or that is new."""
    roles = {agent["instance_id"]: f"agent {n}: {ROLES[n]}"
             for n, agent in enumerate(world["agents"])}
    old = {i["instance"]: i for i in before}
    lines = []
    for inst in after:
        was = old.get(inst["instance"])
        if was is None:
            what = f"new     {inst['state']}, {inst['lifecycle']} {inst['type']}"
            why = f"for label {inst['labels']}"
        elif was["state"] != inst["state"]:
            what = f"{was['state']} -> {inst['state']}"
            why = roles.get(inst["instance"], "")
        else:
            continue
        lines.append([inst["env"], inst["instance"], what, why])
    if not lines:
        print("  nothing changed")
        return
    widths = [max(len(line[col]) for line in lines) for col in range(3)]
    for line in lines:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths))
              + "  " + line[3])


def commands(path):
    """One line per CLI command (argv[0]) with its count and exit statuses."""
    counts = collections.Counter()
    exits = collections.defaultdict(collections.Counter)
    with open(path, encoding="utf-8") as log:
        for line in log:
            entry = json.loads(line)
            name = " ".join(entry["argv"][:1]) or "(empty)"
            if name == "build":  # which job matters more than "build"
                jobs = [w for w in entry["argv"][1:] if not w.startswith("-")]
                name = f"build {jobs[0]}" if jobs else name
            counts[name] += 1
            exits[name][str(entry["exit"])] += 1
    width = max((len(name) for name in counts), default=0)
    for name, count in counts.most_common():
        statuses = ", ".join(f"exit {code}: {n}" for code, n in sorted(exits[name].items()))
        print(f"  {name.ljust(width)}  {count:3d}  ({statuses})")
    print(f"  {sum(counts.values())} command(s)")


def load(path):
    with open(path, encoding="utf-8") as source:
        return json.load(source)


def show(value):
    json.dump(value, sys.stdout, indent=2)
    print()


# subcommand -> (number of arguments, what to do with them)
SUBCOMMANDS = {
    "agents": (0, lambda: show(AGENTS)),
    "scenario": (1, lambda world: show(scenario(load(world)))),
    "describe": (1, lambda path: describe(load(path))),
    "changes": (3, lambda world, before, after:
                changes(load(world), load(before), load(after))),
    "commands": (1, commands),
}


def main(argv):
    arity, run = SUBCOMMANDS.get(argv[0] if argv else "", (None, None))
    if arity is None or len(argv) - 1 != arity:
        raise SystemExit("usage:\n" + __doc__.split("\n\n")[1])
    run(*argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
