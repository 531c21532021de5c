#!/usr/bin/env python3
"""Checks the importable job definitions in jenkins/jobs (run by tests/groovy/run.sh).

- both config.xml files are well-formed and say what docs/jenkins.md promises
  (label, schedule, no concurrent builds, archived CSVs and report.html, the
  HTML Publisher and one Plot per properties_*.csv, the system Groovy step);
- the GC job's embedded script is jenkins/run_gc.groovy, byte for byte;
- util_slave_manager's shell step passes shellcheck, and when run with stand-ins
  for `aws` and `slave_manager` fetches environment.json and id_rsa from S3,
  calls the manager with the original's flags plus --jenkins_user, and leaves
  no key behind;
- script-approvals.txt holds only well-formed signatures.
Prints PASS/FAIL lines; exits 1 on any failure.
"""
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import traceback
import xml.etree.ElementTree as ET

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
JOBS = os.path.join(REPO, 'jenkins', 'jobs')
USM = os.path.join(JOBS, 'util_slave_manager', 'config.xml')
GC = os.path.join(JOBS, 'util-slave-manager-garbage-collector', 'config.xml')

# The original's job line (SPEC A1), and what this version adds.
ORIGINAL_FLAGS = ['--id_rsa', '--owner_email', '--aws_sqs_account_id', '--aws_sqs_region', '--url',
                  '--max_num_of_slaves_in_env', '--max_spot_price', '--ami_ids', '--loop_counter',
                  '--jenkins_master_region', '--required_ip_list']
NEW_FLAGS = ['--jenkins_user']

results = []


def test(fn):
    results.append(fn)
    return fn


def text(root, path):
    el = root.find(path)
    assert el is not None, f'{path} missing'
    return el.text or ''


def shell_command():
    return text(ET.parse(USM).getroot(), './builders/hudson.tasks.Shell/command')


@test
def both_job_definitions_are_well_formed_projects():
    for path in (USM, GC):
        root = ET.parse(path).getroot()
        assert root.tag == 'project', f'{path}: root is {root.tag}, not a freestyle <project>'


@test
def util_slave_manager_runs_every_5_minutes_on_master_node_one_at_a_time():
    root = ET.parse(USM).getroot()
    assert text(root, 'assignedNode') == 'master_node'
    assert text(root, 'canRoam') == 'false'
    assert text(root, 'concurrentBuild') == 'false'
    assert text(root, 'disabled') == 'false'
    assert text(root, './triggers/hudson.triggers.TimerTrigger/spec') == 'H/5 * * * *'
    assert len(root.findall('./builders/*')) == 1
    archived = text(root, './publishers/hudson.tasks.ArtifactArchiver/artifacts').split(',')
    assert sorted(archived) == ['properties_*.csv', 'report.html'], archived


def csv_files_the_manager_writes():
    """The properties_*.csv names in the sources that write them."""
    names = set()
    for path in ('crates/core/src/counter.rs', 'src/record/stats.rs'):
        with open(os.path.join(REPO, path)) as f:
            names |= set(re.findall(r'"(properties_\w+\.csv)"', f.read()))
    return names


@test
def util_slave_manager_publishes_report_html_with_the_html_publisher():
    root = ET.parse(USM).getroot()
    targets = root.findall('./publishers/htmlpublisher.HtmlPublisher/reportTargets/htmlpublisher.HtmlPublisherTarget')
    assert len(targets) == 1, targets
    target = targets[0]
    # The manager writes report.html in its working directory, the workspace.
    assert text(target, 'reportDir') == '.'
    assert text(target, 'reportFiles') == 'report.html'
    # Only the report is copied: the plugin's default (**/*) would publish
    # the whole workspace, environment.json included.
    assert text(target, 'includes') == 'report.html'
    assert text(target, 'reportName')
    # Every run's report is kept (a run is one build), and a run that wrote
    # none (it failed before its end) does not fail the build a second time.
    assert text(target, 'keepAll') == 'true'
    assert text(target, 'allowMissing') == 'true'


@test
def util_slave_manager_plots_every_properties_csv_one_plot_each_series_by_column():
    root = ET.parse(USM).getroot()
    plots = root.findall('./publishers/hudson.plugins.plot.PlotPublisher/plots/hudson.plugins.plot.Plot')
    files = []
    for plot in plots:
        series = plot.findall('./series/*')
        assert [s.tag for s in series] == ['hudson.plugins.plot.CSVSeries'], [s.tag for s in series]
        assert text(series[0], 'fileType') == 'csv'
        # OFF: no column excluded, so each column of the CSV is a series.
        assert text(series[0], 'inclusionFlag') == 'OFF'
        assert text(plot, 'title')
        files.append(text(series[0], 'file'))
    expected = csv_files_the_manager_writes()
    assert len(expected) == 4, expected
    assert sorted(files) == sorted(expected), files
    # The plugin keeps each plot's history in the job's directory under this
    # name: one file per plot, never shared.
    names = [text(p, 'csvFileName') for p in plots]
    assert all(names) and len(set(names)) == len(names), names


@test
def gc_job_runs_run_gc_groovy_as_a_sandboxed_system_groovy_step():
    root = ET.parse(GC).getroot()
    assert text(root, 'assignedNode') == 'master_node'
    assert text(root, 'concurrentBuild') == 'false'
    steps = root.findall('./builders/*')
    assert [s.tag for s in steps] == ['hudson.plugins.groovy.SystemGroovy']
    source = steps[0].find('source')
    assert source.get('class') == 'hudson.plugins.groovy.StringSystemScriptSource'
    with open(os.path.join(REPO, 'jenkins', 'run_gc.groovy')) as f:
        assert text(source, './script/script') == f.read(), 'the embedded script differs from jenkins/run_gc.groovy'
    assert text(source, './script/sandbox') == 'true'


@test
def script_approvals_are_signatures():
    with open(os.path.join(JOBS, 'script-approvals.txt')) as f:
        lines = [raw.strip() for raw in f if raw.strip() and not raw.startswith('#')]
    assert lines, 'no signatures'
    for line in lines:
        assert re.fullmatch(r'(method|staticMethod) [\w.$]+ \w+( [\w.$\[\]]+)*'
                            r'|(new|field|staticField) [\w.$]+( [\w.$\[\]]+)*', line), line


@test
def util_slave_manager_shell_step_passes_shellcheck():
    with tempfile.NamedTemporaryFile('w', suffix='.sh', delete=False) as f:
        f.write(shell_command())
    try:
        r = subprocess.run(['shellcheck', f.name], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        os.unlink(f.name)


@test
def util_slave_manager_shell_step_fetches_from_s3_and_calls_the_manager_with_its_flags():
    work = tempfile.mkdtemp(prefix='usm-job-')
    try:
        bin_dir = os.path.join(work, 'bin')
        ws = os.path.join(work, 'workspace')
        os.makedirs(bin_dir)
        os.makedirs(ws)
        log = os.path.join(work, 'calls')
        # aws s3 cp s3://BUCKET/NAME . -> writes NAME; records the call.
        # aws s3 cp s3://BUCKET/NAME DEST (a directory or a file) -> writes
        # it and records the mode it was created with.
        write_exe(os.path.join(bin_dir, 'aws'), f'''#!/bin/sh
printf 'aws %s\\n' "$*" >>{log}
[ "$1 $2" = "s3 cp" ] || exit 2
dest="$4"
[ -d "$dest" ] && dest="$dest/${{3##*/}}"
printf 'from s3\\n' >"$dest"
stat -c "created %a $dest" "$dest" >>{log}
''')
        # slave_manager: records argv one word per line, the key's mode and
        # directory, and what the workspace holds while it runs.
        write_exe(os.path.join(bin_dir, 'slave_manager'), f'''#!/bin/sh
for a in "$@"; do printf 'arg %s\\n' "$a"; done >>{log}
key=""
while [ $# -gt 0 ]; do [ "$1" = "--id_rsa" ] && key="$2"; shift; done
stat -c 'keymode %a' "$key" >>{log}
stat -c 'keydirmode %a' "$(dirname "$key")" >>{log}
printf 'keypath %s\\n' "$(cd "$(dirname "$key")" && pwd)/$(basename "$key")" >>{log}
ls -A "$PWD" | sed 's/^/workspace /' >>{log}
''')
        script = os.path.join(work, 'step.sh')
        write_exe(script, shell_command())
        env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ['PATH'], JENKINS_URL='https://jenkins.example.com/')
        env.pop('SLAVE_MANAGER', None)
        r = subprocess.run([script], cwd=ws, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        with open(log) as f:
            calls = f.read().splitlines()
        aws = [c for c in calls if c.startswith('aws ')]
        assert len(aws) == 2 and aws[0].endswith('/environment.json .') and '/id_rsa ' in aws[1], aws
        assert all(c.startswith('aws s3 cp s3://') for c in aws), aws
        argv = [c[4:] for c in calls if c.startswith('arg ')]
        flags = [a for a in argv if a.startswith('--')]
        assert sorted(flags) == sorted(ORIGINAL_FLAGS + NEW_FLAGS), flags

        def value(flag):
            return argv[argv.index(flag) + 1]

        assert value('--url') == 'https://jenkins.example.com/'
        key = [c[len('keypath '):] for c in calls if c.startswith('keypath ')][0]
        assert not key.startswith(os.path.realpath(ws) + os.sep), f'the key is outside the workspace: {key}'
        assert value('--id_rsa').endswith('/id_rsa') and os.path.realpath(value('--id_rsa')) == key
        assert 'keydirmode 700' in calls, calls
        created = [c for c in calls if c.startswith('created ') and c.endswith('/id_rsa')]
        assert created and created[0].startswith('created 600 '), f'unreadable from the first byte: {created}'
        assert 'workspace id_rsa' not in calls, 'never in the workspace, not even for a moment'
        assert not os.path.exists(os.path.dirname(key)), 'the key directory is gone after the build'
        assert re.fullmatch(r'my-test-env:ami-[0-9a-f]+', value('--ami_ids'))
        assert value('--jenkins_user')
        ips = argv[argv.index('--required_ip_list') + 1:]
        assert ips and all(re.fullmatch(r'\d+:\d+\.\d+\.\d+\.\d+/\d+', w) for w in ips), ips
        assert 'keymode 600' in calls
        assert os.path.exists(os.path.join(ws, 'environment.json'))
        assert not os.path.exists(os.path.join(ws, 'id_rsa'))
    finally:
        shutil.rmtree(work)


def write_exe(path, body):
    with open(path, 'w') as f:
        f.write(body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def main():
    failed = 0
    for fn in results:
        name = fn.__name__.replace('_', ' ')
        try:
            fn()
            print(f'PASS jobs: {name}')
        except Exception:
            failed += 1
            print(f'FAIL jobs: {name}')
            print(''.join('    ' + row + '\n' for row in traceback.format_exc().rstrip().splitlines()))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
