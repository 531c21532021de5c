#!/usr/bin/env python3
"""Build, and look at, a local AWS world for slave_manager in a moto server.

slave_manager assumes a role in every environment's account (SPEC A3, A5) and
launches agents there; moto keeps one separate world per account, so this
script builds each environment with the credentials that AssumeRole returns,
exactly where the manager will look.

  moto_world.py [build] --endpoint URL --envs NAME:ACCOUNT:REGION,... \\
      --jenkins-url URL [--master-region R] [--master-account ID] \\
      [--environment-json PATH] [--world-json PATH] [--agents FILE] \\
      [--slave-name NAME] [--owner-email EMAIL] [--sqs-region R] [--reset]
  moto_world.py fleet --endpoint URL [--environment PATH]
  moto_world.py events --endpoint URL --queue NAME [--send FILE]
      [--environment PATH]

`build` writes environment.json (SPEC A3) and prints the world JSON (ids the
tests need); `fleet` prints every instance of every environment as a table,
for a demo's before/after view.
"""

import argparse
import json
import os
import sys
import urllib.request

import boto3
from botocore.exceptions import BotoCoreError, ClientError

# moto accepts any credentials; fixed dummy ones keep real keys that may sit
# in the caller's environment from ever being sent anywhere.
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing",
                     "aws_secret_access_key": "testing"}
MASTER_ROLE = "jenkins_master"          # also the master SG's name (SPEC A3)
ROLE_SESSION = "slave-manager-script"
AGENT_SG = "jenkins-sg"
INSTANCE_PROFILE = "jenkins-cloud"
KEY_PAIR = "jenkins.cloud"
SQS_QUEUE = "jenkins-requests"
DEFAULT_TYPE = "t2.small"
EXECUTORS = {"shared": 5, "spot": 1}   # label word -> executors (SPEC A4)
SPOT_PRICE = "0.2"


class Aws:
    """boto3 clients aimed at one moto endpoint, with given or dummy keys."""

    def __init__(self, endpoint):
        self.endpoint = endpoint.rstrip("/")

    def client(self, service, region, credentials=None):
        return boto3.client(service, region_name=region,
                            endpoint_url=self.endpoint,
                            **(credentials or DUMMY_CREDENTIALS))

    def assume_role(self, account, role, region):
        """Credentials for `role` in `account`, taken as the manager takes
        them; moto then files every call made with them under that account."""
        answer = self.client("sts", region).assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/{role}",
            RoleSessionName=ROLE_SESSION)["Credentials"]
        return {"aws_access_key_id": answer["AccessKeyId"],
                "aws_secret_access_key": answer["SecretAccessKey"],
                "aws_session_token": answer["SessionToken"]}

    def reset(self):
        """Empty the moto server, so a build starts from nothing."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset",
                                         method="POST")
        urllib.request.urlopen(request, timeout=30).close()


def parse_envs(text):
    """`dev:111111111111:us-east-2,prod:…` as [(name, account, region)]."""
    envs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 3 or not all(parts):
            raise SystemExit(f"--envs: '{item}' is not NAME:ACCOUNT:REGION")
        name, account, region = parts
        if "_" in name:
            raise SystemExit(f"--envs: env name '{name}' may not contain '_' "
                             "(labels use it as a separator, SPEC A4)")
        if not (account.isdigit() and len(account) == 12):
            raise SystemExit(f"--envs: account '{account}' is not 12 digits")
        envs.append((name, account, region))
    if len({name for name, _, _ in envs}) != len(envs):
        raise SystemExit("--envs: an env name appears twice")
    return envs


def pick_amis(ec2):
    """Two of moto's stock images of this region: (current, old).

    The newest and the oldest Amazon Linux 2 x86_64 gp2 builds, so the pair is
    stable from run to run and the "old" one looks old; any two x86_64 EBS
    images if moto ever ships fewer of those.
    """
    family = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["amzn2-ami-hvm-*-x86_64-gp2"]}])["Images"]
    if len(family) < 2:
        family = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "architecture", "Values": ["x86_64"]},
            {"Name": "root-device-type", "Values": ["ebs"]}])["Images"]
    family.sort(key=lambda image: (image.get("Name", ""), image["ImageId"]))
    return family[-1]["ImageId"], family[0]["ImageId"]


def build_env(aws, index, name, account, region):
    """Create one environment's VPC, subnets, SG, profile and key pair.

    Everything is made with the assumed-role credentials, i.e. inside the
    env's account. Each env gets its own 10.<n>.0.0/16 so agents' private IPs
    (and so Jenkins node names) tell the envs apart in a demo.
    """
    creds = aws.assume_role(account, MASTER_ROLE, region)
    ec2 = aws.client("ec2", region, creds)
    iam = aws.client("iam", region, creds)
    octet = index + 1
    vpc = ec2.create_vpc(CidrBlock=f"10.{octet}.0.0/16")["Vpc"]["VpcId"]
    zones = [zone["ZoneName"] for zone in
             ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnets = []
    for number, zone in enumerate(zones, start=1):
        subnet = ec2.create_subnet(VpcId=vpc, AvailabilityZone=zone,
                                   CidrBlock=f"10.{octet}.{number}.0/24")
        subnet_id = subnet["Subnet"]["SubnetId"]
        # Agents reach Jenkins from public subnets; the master's SG opens to
        # the public IPs of prod agents (SPEC A7), so launches need them.
        ec2.modify_subnet_attribute(SubnetId=subnet_id,
                                    MapPublicIpOnLaunch={"Value": True})
        subnets.append({"id": subnet_id, "az": zone})
    sg = ec2.create_security_group(GroupName=AGENT_SG, VpcId=vpc,
                                   Description="Jenkins agents")["GroupId"]
    try:
        profile = iam.create_instance_profile(
            InstanceProfileName=INSTANCE_PROFILE)["InstanceProfile"]["Arn"]
    except ClientError as err:
        # Two envs may share an account (two regions); IAM is global.
        if err.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        profile = iam.get_instance_profile(
            InstanceProfileName=INSTANCE_PROFILE)["InstanceProfile"]["Arn"]
    ec2.create_key_pair(KeyName=KEY_PAIR)
    ami, old_ami = pick_amis(ec2)
    return {"account": account, "region": region, "vpc": vpc, "ami": ami,
            "old_ami": old_ami, "subnets": subnets, "sg": sg,
            "instance_profile_arn": profile}


def build_master(aws, region, expected_account):
    """Create the master's SG `jenkins_master` with the default credentials.

    The manager edits that SG with its own (not assumed) credentials, so it
    must live in whatever account moto gives the default keys.
    """
    account = aws.client("sts", region).get_caller_identity()["Account"]
    if expected_account and expected_account != account:
        raise SystemExit(
            f"--master-account {expected_account}: moto files calls made "
            f"with the default credentials under {account}, which is where "
            f"slave_manager will look for the master's SG")
    sg = aws.client("ec2", region).create_security_group(
        GroupName=MASTER_ROLE, Description="Jenkins master")["GroupId"]
    return account, sg


def label_traits(label):
    """(executors, instance type, spot?) that a label asks for, as the
    original decided them: any `_`-word `shared`/`spot` sets the executors,
    any word that looks like an instance type (has a dot) sets the type."""
    words = label.split("_")
    executors = next((EXECUTORS[w] for w in words if w in EXECUTORS), 1)
    instance_type = next((w for w in words if "." in w), DEFAULT_TYPE)
    return executors, instance_type, "spot" in words


def launch_agent(aws, env, spec, number, jenkins_url, slave_name, owner):
    """Launch one pre-existing agent as the manager would, then tag it.

    The launch spec is the original's (SPEC A5 "Create"); spot agents use
    RunInstances with spot market options rather than RequestSpotInstances,
    because moto's spot requests drop the network interfaces, instance
    profile and volumes (the agent would land in the default VPC). The tags
    are added afterwards, as the original did.
    """
    labels = spec.get("labels", spec["env"])
    executors, instance_type, spot_label = label_traits(labels.split()[0])
    spot = spec.get("spot", spot_label)
    state = spec.get("state", "running")
    if state not in ("running", "stopped"):
        raise SystemExit(f"agent {number}: state must be running or stopped")
    if spot and state == "stopped":
        raise SystemExit(f"agent {number}: a one-time spot instance cannot be "
                         "stopped (EC2 refuses it)")
    amis = {"current": env["ami"], "old": env["old_ami"]}
    if spec.get("ami", "current") not in amis:
        raise SystemExit(f"agent {number}: ami must be current or old")
    ami = amis[spec.get("ami", "current")]
    instance_type = spec.get("type", instance_type)
    subnet = env["subnets"][number % len(env["subnets"])]["id"]
    creds = aws.assume_role(env["account"], MASTER_ROLE, env["region"])
    ec2 = aws.client("ec2", env["region"], creds)
    launch = {"ImageId": ami, "KeyName": KEY_PAIR, "InstanceType": instance_type,
              "IamInstanceProfile": {"Arn": env["instance_profile_arn"]}}
    if spot:
        launch["BlockDeviceMappings"] = [{"DeviceName": "/dev/xvda", "Ebs": {
            "VolumeSize": 25, "DeleteOnTermination": True,
            "VolumeType": "standard"}}]
        launch["NetworkInterfaces"] = [{"DeviceIndex": 0, "SubnetId": subnet,
                                        "Groups": [env["sg"]],
                                        "AssociatePublicIpAddress": True}]
        launch["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "MaxPrice": SPOT_PRICE, "SpotInstanceType": "one-time"}}
    else:
        launch["BlockDeviceMappings"] = [{"DeviceName": "/dev/xvda",
                                          "Ebs": {"VolumeSize": 25}}]
        launch["SubnetId"] = subnet
        launch["SecurityGroupIds"] = [env["sg"]]
    instance_id = ec2.run_instances(
        MinCount=1, MaxCount=1, **launch)["Instances"][0]["InstanceId"]
    slave_data = json.dumps({"num_of_executors": spec.get("executors", executors),
                             "environment": "infra", "slave_labels": labels,
                             "description": "Created by Swarm",
                             # Another master's agent, when the spec says so.
                             "jenkins_url": spec.get("jenkins_url", jenkins_url)})
    name = spec.get("name", slave_name)
    tags = {"Name": name, "slave_data": slave_data, "owner": owner,
            "environment": "infra", "role": slave_name,
            "is_spot": "true" if spot else "false", "is_asg": "false",
            "jumpcloud_tags": "admin,superadmin"}
    ec2.create_tags(Resources=[instance_id],
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[instance_id])
    instance = ec2.describe_instances(InstanceIds=[instance_id])[
        "Reservations"][0]["Instances"][0]
    return {**spec, "labels": labels, "spot": spot, "state": state,
            "name": name, "instance_id": instance_id, "image_id": ami,
            "instance_type": instance_type, "subnet": subnet,
            "private_ip": instance.get("PrivateIpAddress"),
            "public_ip": instance.get("PublicIpAddress")}


def environment_json(envs, master_sg, jenkins_url):
    """environment.json in the shape of SPEC A3."""
    return {
        "jenkins-master": {"jenkins-master-sg-name": MASTER_ROLE,
                           "jenkins-master-sg-id": master_sg},
        "environments": {
            name: {"account-id": env["account"], "region": env["region"],
                   "vpcid": env["vpc"], "jenkins-sg": env["sg"],
                   "instance-profile": INSTANCE_PROFILE,
                   "vpcsubnet": env["subnets"], "jenkins_url": jenkins_url}
            for name, env in envs.items()},
    }


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as out:
        json.dump(value, out, indent=2)
        out.write("\n")


def cmd_build(args):
    """Build the world; write environment.json; print the world JSON."""
    aws = Aws(args.endpoint)
    if args.reset:
        aws.reset()
    env_specs = parse_envs(args.envs)
    master_account, master_sg = build_master(aws, args.master_region,
                                             args.master_account)
    envs = {name: build_env(aws, index, name, account, region)
            for index, (name, account, region) in enumerate(env_specs)}
    agents = []
    if args.agents:
        with open(args.agents, encoding="utf-8") as specs:
            for number, spec in enumerate(json.load(specs)):
                if spec.get("env") not in envs:
                    raise SystemExit(f"agent {number}: unknown env {spec.get('env')!r}")
                agents.append(launch_agent(aws, envs[spec["env"]], spec, number,
                                           args.jenkins_url, args.slave_name,
                                           args.owner_email))
    write_json(args.environment_json,
               environment_json(envs, master_sg, args.jenkins_url))
    world = {
        "environment_json": os.path.abspath(args.environment_json),
        "jenkins_url": args.jenkins_url,
        "slave_name": args.slave_name,
        "ami_ids": ",".join(f"{name}:{env['ami']}" for name, env in envs.items()),
        "master_account": master_account,
        "master_region": args.master_region,
        "master_sg": master_sg,
        "envs": envs,
        "agents": agents,
    }
    if args.sqs_region:
        url = aws.client("sqs", args.sqs_region).create_queue(
            QueueName=SQS_QUEUE)["QueueUrl"]
        world["sqs"] = {"account": master_account, "region": args.sqs_region,
                        "queue_url": url}
    if args.world_json:
        write_json(args.world_json, world)
    json.dump(world, sys.stdout, indent=2)
    print()


def fleet_rows(aws, environment):
    """One row per instance in every env of an environment.json, then any in
    the master's own account (default credentials) in those regions, listed
    as env `(master)`: agents must never land there."""
    role = environment["jenkins-master"]["jenkins-master-sg-name"]
    envs = sorted(environment["environments"].items())
    places = [(name, env["region"], aws.assume_role(env["account-id"], role, env["region"]))
              for name, env in envs]
    places += [("(master)", region, None) for region in sorted({env["region"] for _, env in envs})]
    rows = []
    for name, region, creds in places:
        ec2 = aws.client("ec2", region, creds)
        instances = [instance
                     for page in ec2.get_paginator("describe_instances").paginate()
                     for reservation in page["Reservations"]
                     for instance in reservation["Instances"]]
        instances.sort(key=lambda i: (i["LaunchTime"], i["InstanceId"]))
        for instance in instances:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            try:
                labels = json.loads(tags["slave_data"])["slave_labels"]
            except (KeyError, ValueError, TypeError):
                labels = "-"
            interfaces = instance.get("NetworkInterfaces", [])
            rows.append({
                "env": name, "instance": instance["InstanceId"],
                "state": instance["State"]["Name"], "type": instance["InstanceType"],
                "lifecycle": instance.get("InstanceLifecycle", "on-demand"),
                "private_ip": instance.get("PrivateIpAddress", "-"), "labels": labels,
                "ami": instance["ImageId"], "name": tags.get("Name", "-"),
                # The rest only in --json: what a test checks of a launch.
                "tags": tags, "subnet": instance.get("SubnetId"),
                "groups": sorted({g["GroupId"] for i in interfaces for g in i.get("Groups", [])}
                                 | {g["GroupId"] for g in instance.get("SecurityGroups", [])}),
                "profile": instance.get("IamInstanceProfile", {}).get("Arn"),
                "key_name": instance.get("KeyName"),
                "volumes": [{"device": m["DeviceName"],
                             "delete_on_termination": m.get("Ebs", {}).get("DeleteOnTermination")}
                            for m in instance.get("BlockDeviceMappings", [])],
            })
    return rows


def volume_rows(aws, environment):
    """Every EBS volume of every env: a volume `available` after its
    instance was terminated is a leaked disk that still bills."""
    role = environment["jenkins-master"]["jenkins-master-sg-name"]
    rows = []
    for name, env in sorted(environment["environments"].items()):
        creds = aws.assume_role(env["account-id"], role, env["region"])
        ec2 = aws.client("ec2", env["region"], creds)
        for volume in ec2.describe_volumes()["Volumes"]:
            rows.append({"env": name, "volume": volume["VolumeId"], "state": volume["State"],
                         "instances": [a["InstanceId"] for a in volume.get("Attachments", [])]})
    return rows


def cmd_volumes(args):
    """Print every env's volumes as JSON."""
    with open(args.environment, encoding="utf-8") as source:
        environment = json.load(source)
    json.dump(volume_rows(Aws(args.endpoint), environment), sys.stdout, indent=1)
    print()


def cmd_events(args):
    """Each env's interruption queue `--queue`, in the env's account and
    region (made if missing): send the `--send` file's `[{env, body}]` to
    it, then print {env: messages left (visible or in flight)}."""
    with open(args.environment, encoding="utf-8") as source:
        environment = json.load(source)
    aws = Aws(args.endpoint)
    role = environment["jenkins-master"]["jenkins-master-sg-name"]
    queues = {}
    for name, env in sorted(environment["environments"].items()):
        creds = aws.assume_role(env["account-id"], role, env["region"])
        sqs = aws.client("sqs", env["region"], creds)
        queues[name] = (sqs, sqs.create_queue(QueueName=args.queue)["QueueUrl"])
    if args.send:
        with open(args.send, encoding="utf-8") as source:
            for message in json.load(source):
                sqs, url = queues[message["env"]]
                sqs.send_message(QueueUrl=url, MessageBody=message["body"])
    left = {}
    for name, (sqs, url) in queues.items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        left[name] = sum(int(v) for v in attributes.values())
    json.dump(left, sys.stdout)
    print()


def cmd_fleet(args):
    """Print the fleet table."""
    with open(args.environment, encoding="utf-8") as source:
        environment = json.load(source)
    header = ["ENV", "INSTANCE", "STATE", "TYPE", "LIFECYCLE", "PRIVATE IP",
              "LABELS", "AMI", "NAME"]
    rows = fleet_rows(Aws(args.endpoint), environment)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return
    keys = ["env", "instance", "state", "type", "lifecycle", "private_ip", "labels", "ami", "name"]
    rows = [header] + [[row[k] for k in keys] for row in rows]
    widths = [max(len(str(row[col])) for row in rows) for col in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).ljust(width)
                        for cell, width in zip(row, widths)).rstrip())
    print(f"{len(rows) - 1} instance(s)")


def parse_args(argv):
    """`fleet …`, `volumes …`, `events …` or (the default) `[build] …`."""
    readers = {"volumes": (cmd_volumes, "Print every EBS volume of every env as JSON."),
               "fleet": (cmd_fleet, "Print every instance of every env as a table."),
               "events": (cmd_events, "Send EC2 events to the envs' interruption queues; "
                                      "print what is left on them.")}
    if argv[:1] and argv[0] in readers:
        run, description = readers[argv[0]]
        parser = argparse.ArgumentParser(prog=f"moto_world.py {argv[0]}", description=description)
        parser.add_argument("--endpoint", required=True, help="moto server URL")
        parser.add_argument("--environment", default="environment.json",
                            help="environment.json to read the envs from")
        if run is cmd_fleet:
            parser.add_argument("--json", action="store_true",
                                help="print a JSON list of rows instead of a table")
        if run is cmd_events:
            parser.add_argument("--queue", required=True, help="the queue's name in every env")
            parser.add_argument("--send", metavar="FILE",
                                help="JSON list of {env, body} to send first")
        args = parser.parse_args(argv[1:])
        args.run = run
        return args
    if argv[:1] == ["build"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="moto_world.py [build]",
        description="Build a slave_manager world in a moto server.")
    parser.add_argument("--endpoint", required=True, help="moto server URL")
    parser.add_argument("--envs", required=True,
                        help="NAME:ACCOUNT:REGION,... e.g. dev:111111111111:us-east-2")
    parser.add_argument("--jenkins-url", required=True,
                        help="jenkins_url of every env (and of agents' slave_data)")
    parser.add_argument("--master-region", default="us-east-2",
                        help="region of the master's SG (default us-east-2)")
    parser.add_argument("--master-account",
                        help="check that the default credentials land there")
    parser.add_argument("--environment-json", default="environment.json",
                        help="where to write environment.json")
    parser.add_argument("--world-json", help="also write the world JSON here")
    parser.add_argument("--agents", metavar="FILE",
                        help="JSON list of agents to launch beforehand")
    parser.add_argument("--slave-name", default="jslave-in-house",
                        help="Name tag of agents (default jslave-in-house)")
    parser.add_argument("--owner-email", default="ops@example.com",
                        help="owner tag of agents")
    parser.add_argument("--sqs-region",
                        help=f"also create the {SQS_QUEUE} queue there "
                             "(master account)")
    parser.add_argument("--reset", action="store_true",
                        help="empty the moto server first")
    args = parser.parse_args(argv)
    args.run = cmd_build
    return args


def main(argv):
    args = parse_args(argv)
    try:
        args.run(args)
    except (BotoCoreError, ClientError) as err:
        code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
        hint = (" (the world exists already: add --reset)"
                if code.endswith(("Duplicate", "AlreadyExists")) else "")
        raise SystemExit(f"moto_world: {err}{hint}") from err
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
