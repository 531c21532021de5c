#!/usr/bin/env python3
"""A large slave_manager world in moto, for the pass-cost benchmark.

tests/support/moto_world.py builds the small worlds of the tests and the demo (one
agent per call, /24 subnets); this builds E envs holding I agents between
them quickly: /20 subnets (moto refuses launches once a subnet is full) and
RunInstances in batches, tagged at launch as the manager tags its own. A
quarter of each env's agents are spot (`ENV_spot`), the rest on-demand (`ENV`),
all running, all with DeleteOnTermination already set (so the first pass's
inventory has nothing to change).

  bench_world.py --endpoint URL --envs E --instances I --jenkins-url URL
      --environment-json PATH [--world-json PATH]

prints the world JSON: envs, AMI ids, and every agent (env, id, ip, labels).
"""

import argparse
import json
import sys

import bench_common  # noqa: F401  (puts tests/support, where moto_world lives, on sys.path)
import moto_world
from moto_world import Aws

ENV_NAMES = ["dev", "prod", "qa", "stage", "perf", "load", "demo", "int", "uat", "sbx"]
REGIONS = ["us-east-2", "us-west-2", "eu-west-1"]
BATCH = 200
SPOT_SHARE = 4          # one agent in SPOT_SHARE is spot


def env_specs(count):
    """(name, account, region) of `count` envs, each in its own account."""
    if not 1 <= count <= len(ENV_NAMES):
        raise SystemExit(f"--envs: 1 to {len(ENV_NAMES)}")
    return [(ENV_NAMES[i], f"{100000000000 + 11111 * (i + 1):012d}", REGIONS[i % len(REGIONS)])
            for i in range(count)]


def build_env(aws, index, name, account, region):
    """As moto_world.build_env, with two /20 subnets (4091 addresses each)."""
    creds = aws.assume_role(account, moto_world.MASTER_ROLE, region)
    ec2 = aws.client("ec2", region, creds)
    iam = aws.client("iam", region, creds)
    octet = index + 1
    vpc = ec2.create_vpc(CidrBlock=f"10.{octet}.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnets = []
    for number, zone in enumerate(zones):
        subnet = ec2.create_subnet(VpcId=vpc, AvailabilityZone=zone,
                                   CidrBlock=f"10.{octet}.{16 * number}.0/20")["Subnet"]["SubnetId"]
        subnets.append({"id": subnet, "az": zone})
    sg = ec2.create_security_group(GroupName=moto_world.AGENT_SG, VpcId=vpc,
                                   Description="Jenkins agents")["GroupId"]
    profile = iam.create_instance_profile(
        InstanceProfileName=moto_world.INSTANCE_PROFILE)["InstanceProfile"]["Arn"]
    ec2.create_key_pair(KeyName=moto_world.KEY_PAIR)
    ami, old_ami = moto_world.pick_amis(ec2)
    return {"account": account, "region": region, "vpc": vpc, "ami": ami,
            "old_ami": old_ami, "subnets": subnets, "sg": sg,
            "instance_profile_arn": profile, "ec2": ec2}


def launch(env_name, env, count, spot, jenkins_url, subnet):
    """`count` running agents of one kind, in batches; their descriptions."""
    label = f"{env_name}_spot" if spot else env_name
    slave_data = json.dumps({"num_of_executors": 1, "environment": "infra",
                             "slave_labels": label, "description": "Created by Swarm",
                             "jenkins_url": jenkins_url})
    tags = {"Name": "jslave-in-house", "slave_data": slave_data, "owner": "ops@example.com",
            "environment": "infra", "role": "jslave-in-house",
            "is_spot": str(spot).lower(), "is_asg": "false", "jumpcloud_tags": "admin,superadmin"}
    spec = {"ImageId": env["ami"], "KeyName": moto_world.KEY_PAIR, "InstanceType": "t2.small",
            "IamInstanceProfile": {"Arn": env["instance_profile_arn"]},
            "SubnetId": subnet, "SecurityGroupIds": [env["sg"]],
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvda",
                                     "Ebs": {"VolumeSize": 25, "DeleteOnTermination": True}}],
            "TagSpecifications": [{"ResourceType": "instance",
                                   "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]}
    if spot:
        spec["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "MaxPrice": moto_world.SPOT_PRICE, "SpotInstanceType": "one-time"}}
    agents = []
    while len(agents) < count:
        size = min(BATCH, count - len(agents))
        answer = env["ec2"].run_instances(MinCount=size, MaxCount=size, **spec)
        agents += [{"env": env_name, "id": i["InstanceId"], "ip": i["PrivateIpAddress"],
                    "labels": label, "spot": spot, "ami": env["ami"]}
                   for i in answer["Instances"]]
    return agents


def build(endpoint, env_count, instances, jenkins_url, environment_json):
    """Resets moto, builds the world; returns the world JSON."""
    aws = Aws(endpoint)
    aws.reset()
    _, master_sg = moto_world.build_master(aws, "us-west-2", None)
    specs = env_specs(env_count)
    envs = {name: build_env(aws, i, name, account, region)
            for i, (name, account, region) in enumerate(specs)}
    agents = []
    for i, (name, env) in enumerate(envs.items()):
        share = instances // env_count + (1 if i < instances % env_count else 0)
        spot = share // SPOT_SHARE
        agents += launch(name, env, share - spot, False, jenkins_url, env["subnets"][0]["id"])
        agents += launch(name, env, spot, True, jenkins_url, env["subnets"][1]["id"])
    for env in envs.values():
        del env["ec2"]
    moto_world.write_json(environment_json,
                          moto_world.environment_json(envs, master_sg, jenkins_url))
    return {"environment_json": environment_json,
            "ami_ids": ",".join(f"{n}:{e['ami']}" for n, e in envs.items()),
            "envs": envs, "agents": agents}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--envs", type=int, required=True)
    parser.add_argument("--instances", type=int, required=True)
    parser.add_argument("--jenkins-url", required=True)
    parser.add_argument("--environment-json", default="environment.json")
    parser.add_argument("--world-json")
    args = parser.parse_args(argv)
    world = build(args.endpoint, args.envs, args.instances, args.jenkins_url,
                  args.environment_json)
    if args.world_json:
        moto_world.write_json(args.world_json, world)
    json.dump(world, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
