#!/usr/bin/env python3
"""jenkins/agent/start_swarm.sh against moto's server and a loopback metadata service.

World: moto's server on a free loopback port holds the SSM parameter
`jenkins_slave` and an EC2 instance with a `slave_data` tag, in eu-west-3; a
tiny HTTP server plays the instance metadata service with IMDSv2 enforced
(no token, no answer) and serves that instance's id, private IP and identity
document; `aws` is tests/start_swarm/bin/aws (boto3 → moto) and `java` is
tests/start_swarm/bin/java, which records the Swarm client's arguments.
Run by tests/groovy/run.sh; prints PASS/FAIL lines, exits 1 on any failure.
"""
import glob
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, '..', '..'))
SCRIPT = os.path.join(REPO, 'jenkins', 'agent', 'start_swarm.sh')
sys.path.insert(0, os.path.join(REPO, 'tests', 'support'))
from moto_server import MotoServer  # noqa: E402

REGION = 'eu-west-3'
PASSWORD = 's3cret pass'
JENKINS_URL = 'https://jenkins.example.com/'


class Imds:
    """IMDSv2 only: PUT /latest/api/token first, then GETs with the token."""

    TOKEN = 'AQAEAFakeImdsToken=='

    def __init__(self):
        self.instance = {}
        self.give_tokens = True
        self.requests = []
        imds = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, body=''):
                data = body.encode()
                self.send_response(code)
                self.send_header('Content-Type', 'text/plain')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                imds.requests.append(('PUT', self.path))
                if self.path != '/latest/api/token' or not imds.give_tokens:
                    return self.reply(403, 'Forbidden')
                if not self.headers.get('X-aws-ec2-metadata-token-ttl-seconds'):
                    return self.reply(400, 'Missing TTL')
                self.reply(200, Imds.TOKEN)

            def do_GET(self):
                imds.requests.append(('GET', self.path))
                if self.headers.get('X-aws-ec2-metadata-token') != Imds.TOKEN:
                    return self.reply(401, 'Unauthorized')
                i = imds.instance
                pages = {
                    '/latest/meta-data/instance-id': i['id'],
                    '/latest/meta-data/local-ipv4': i['ip'],
                    '/latest/dynamic/instance-identity/document': json.dumps({
                        'accountId': '123456789012', 'architecture': 'x86_64', 'availabilityZone': REGION + 'a',
                        'imageId': i['ami'], 'instanceId': i['id'], 'instanceType': 't3.small',
                        'privateIp': i['ip'], 'region': REGION, 'version': '2017-09-30'}, indent=2),
                }
                if self.path in pages:
                    return self.reply(200, pages[self.path])
                self.reply(404, 'Not Found')

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Case:
    """One test's world: an agent instance in moto, a work dir, the script's environment."""

    def __init__(self, moto, imds, slave_data=None, password=PASSWORD):
        import boto3
        self.moto, self.imds = moto, imds
        moto.reset()
        imds.give_tokens = True
        imds.requests.clear()
        kw = dict(region_name=REGION, endpoint_url=moto.url,
                  aws_access_key_id='testing', aws_secret_access_key='testing')
        ec2 = boto3.client('ec2', **kw)
        ami = ec2.describe_images(Owners=['amazon'])['Images'][0]['ImageId']
        inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType='t3.small')['Instances'][0]
        if slave_data is not None:
            ec2.create_tags(Resources=[inst['InstanceId']], Tags=[
                {'Key': 'Name', 'Value': 'jslave-in-house'},
                {'Key': 'slave_data', 'Value': slave_data if isinstance(slave_data, str) else json.dumps(slave_data)}])
        if password is not None:
            boto3.client('ssm', **kw).put_parameter(Name='jenkins_slave', Value=password, Type='SecureString')
        self.instance = {'id': inst['InstanceId'], 'ip': inst['PrivateIpAddress'], 'ami': ami}
        imds.instance = self.instance
        self.dir = tempfile.mkdtemp(prefix='start-swarm-')
        self.jar = os.path.join(self.dir, 'swarm-client.jar')
        open(self.jar, 'w').close()
        self.standin = os.path.join(self.dir, 'java-calls')
        os.mkdir(self.standin)
        self.log = os.path.join(self.dir, 'swarm.log')
        self.pidfile = os.path.join(self.dir, 'swarm-client.pid')
        self.fsroot = os.path.join(self.dir, 'ws')
        self.aws_log = os.path.join(self.dir, 'aws-calls')
        self.env = {
            'PATH': os.environ['PATH'],
            'HOME': self.dir,
            'IMDS_URL': imds.url,
            'AWS_CLI': os.path.join(HERE, 'bin', 'aws'),
            'JAVA': os.path.join(HERE, 'bin', 'java'),
            'JAVA_STANDIN_DIR': self.standin,
            'AWS_STANDIN_LOG': self.aws_log,
            'AWS_ENDPOINT_URL': moto.url,
            'AWS_ACCESS_KEY_ID': 'testing',
            'AWS_SECRET_ACCESS_KEY': 'testing',
            'START_SWARM_CONFIG': os.path.join(self.dir, 'start_swarm.conf'),
            'SWARM_JAR': self.jar,
            'SWARM_LOG': self.log,
            'SWARM_PIDFILE': self.pidfile,
            'SWARM_FSROOT': self.fsroot,
            'TAG_WAIT_SECONDS': '0',
            'SWARM_START_CHECK_SECONDS': '0.5',
        }
        with open(self.env['START_SWARM_CONFIG'], 'w') as f:
            f.write('SWARM_USER=swarm-agent\n')

    def run(self, **extra_env):
        env = dict(self.env, **extra_env)
        return subprocess.run(['bash', SCRIPT], env=env, capture_output=True, text=True, timeout=60)

    def java_calls(self):
        calls = []
        for path in sorted(glob.glob(os.path.join(self.standin, '*.args'))):
            with open(path) as f:
                argv = f.read().split('\0')[:-1]
            pw_path = path[:-len('.args')] + '.password'
            password = open(pw_path).read() if os.path.exists(pw_path) else None
            calls.append({'argv': argv, 'password': password})
        return calls

    def log_text(self):
        return open(self.log).read() if os.path.exists(self.log) else ''

    def aws_calls(self):
        if not os.path.exists(self.aws_log):
            return []
        return [json.loads(line)['argv'] for line in open(self.aws_log)]

    def close(self):
        # Stop every java stand-in this case started (each recorded <pid>.args).
        for path in glob.glob(os.path.join(self.standin, '*.args')):
            try:
                os.kill(int(os.path.basename(path)[:-len('.args')]), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


SLAVE_DATA = {'num_of_executors': 5, 'environment': 'infra', 'slave_labels': 'dev-us-east_shared_c5.large',
              'description': 'Created by Swarm', 'jenkins_url': JENKINS_URL}

tests = []


def test(fn):
    tests.append(fn)
    return fn


def expect_failure(r, case, message):
    out = r.stdout + r.stderr
    assert r.returncode != 0, f'exit 0 although {message!r} was expected:\n{out}'
    assert message in out, f'{message!r} not in the output:\n{out}'
    assert message in case.log_text(), f'{message!r} not in the log:\n{case.log_text()}'
    assert case.java_calls() == [], 'the Swarm client was started anyway'


@test
def happy_path_starts_the_swarm_client_as_the_manager_expects(moto, imds):
    case = Case(moto, imds, SLAVE_DATA)
    try:
        r = case.run()
        assert r.returncode == 0, r.stdout + r.stderr
        calls = case.java_calls()
        assert len(calls) == 1, calls
        i = case.instance
        assert calls[0]['argv'] == [
            '-jar', case.jar,
            '-name', f"dev-us-east-{i['ip']}",
            '-disableClientsUniqueId',
            '-deleteExistingClients',
            '-description', f"Created by Swarm InstanceID={i['id']} AmiId={i['ami']}",
            '-executors', '5',
            '-fsroot', case.fsroot,
            '-labels', 'dev-us-east_shared_c5.large',
            '-url', JENKINS_URL,
            '-mode', 'normal',
            '-username', 'swarm-agent',
            '-passwordEnvVariable', 'SWARM_PASSWORD',
        ], calls[0]['argv']
        assert calls[0]['password'] == PASSWORD
        assert not any(PASSWORD in a for a in calls[0]['argv']), 'the password is on the command line'
        assert PASSWORD not in case.log_text() + r.stdout + r.stderr, 'the password is logged'
        # Every AWS call went to the region of the identity document.
        aws = case.aws_calls()
        assert [a[:2] for a in aws] == [['ec2', 'describe-tags'], ['ssm', 'get-parameter']], aws
        assert all(a[a.index('--region') + 1] == REGION for a in aws), aws
        # IMDSv2: a token first, every read with it (the stand-in refuses others).
        assert imds.requests[0] == ('PUT', '/latest/api/token'), imds.requests
        assert 'starting the Swarm client: node dev-us-east-' in case.log_text()
        assert 'java stand-in' in case.log_text(), "the client's output is not in the log"
        assert int(open(case.pidfile).read()) > 0
    finally:
        case.close()


@test
def a_second_run_does_not_start_a_second_client(moto, imds):
    case = Case(moto, imds, SLAVE_DATA)
    try:
        assert case.run().returncode == 0
        r = case.run()
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(case.java_calls()) == 1, case.java_calls()
        assert 'already runs' in case.log_text()
    finally:
        case.close()


@test
def after_a_reboot_a_stale_pid_file_does_not_stop_the_client(moto, imds):
    case = Case(moto, imds, SLAVE_DATA)
    try:
        with open(case.pidfile, 'w') as f:
            f.write('999999\n')             # no such process
        r = case.run()
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(case.java_calls()) == 1
    finally:
        case.close()


@test
def missing_slave_data_tag_is_named_and_fails(moto, imds):
    case = Case(moto, imds, slave_data=None)
    try:
        expect_failure(case.run(), case, f"instance {case.instance['id']} has no slave_data tag")
    finally:
        case.close()


@test
def no_imds_token_is_named_and_fails(moto, imds):
    case = Case(moto, imds, SLAVE_DATA)
    imds.give_tokens = False
    try:
        expect_failure(case.run(), case, 'no IMDSv2 session token')
    finally:
        case.close()


@test
def missing_ssm_password_is_named_and_fails(moto, imds):
    case = Case(moto, imds, SLAVE_DATA, password=None)
    try:
        expect_failure(case.run(), case, f'cannot read the SSM parameter jenkins_slave in {REGION}')
    finally:
        case.close()


@test
def unreadable_slave_data_is_named_and_fails(moto, imds):
    case = Case(moto, imds, dict(SLAVE_DATA, num_of_executors='many'))
    try:
        expect_failure(case.run(), case, "num_of_executors is not a positive number: 'many'")
    finally:
        case.close()


@test
def missing_swarm_user_and_jar_are_named_and_fail(moto, imds):
    case = Case(moto, imds, SLAVE_DATA)
    try:
        os.unlink(case.env['START_SWARM_CONFIG'])
        expect_failure(case.run(), case, 'SWARM_USER is not set')
        expect_failure(case.run(SWARM_USER='swarm-agent', SWARM_JAR='/nonexistent/swarm.jar'), case,
                       'the Swarm client jar /nonexistent/swarm.jar is missing')
    finally:
        case.close()


@test
def a_client_that_dies_at_once_is_reported(moto, imds):
    case = Case(moto, imds, SLAVE_DATA)
    try:
        r = case.run(JAVA_STANDIN_EXIT='1')
        assert r.returncode != 0
        assert 'the Swarm client exited at once' in r.stderr and 'the Swarm client exited at once' in case.log_text()
    finally:
        case.close()


@test
def extra_swarm_options_are_passed_on(moto, imds):
    case = Case(moto, imds, dict(SLAVE_DATA, slave_labels='prod_spot', num_of_executors=1))
    try:
        r = case.run(SWARM_EXTRA_ARGS='-webSocket -retry 30')
        assert r.returncode == 0, r.stdout + r.stderr
        argv = case.java_calls()[0]['argv']
        assert argv[-3:] == ['-webSocket', '-retry', '30'], argv
        assert argv[argv.index('-name') + 1] == f"prod-{case.instance['ip']}"
        assert argv[argv.index('-executors') + 1] == '1'
    finally:
        case.close()


def main():
    moto = MotoServer()
    imds = Imds()
    failed = 0
    try:
        for fn in tests:
            name = fn.__name__.replace('_', ' ')
            try:
                fn(moto, imds)
                print(f'PASS start_swarm: {name}', flush=True)
            except Exception:
                failed += 1
                print(f'FAIL start_swarm: {name}', flush=True)
                print(''.join('    ' + row + '\n' for row in traceback.format_exc().rstrip().splitlines()), flush=True)
    finally:
        imds.stop()
        moto.stop()
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
