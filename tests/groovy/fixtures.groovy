// Fixtures for jenkins/get_queue_jobs.groovy and jenkins/run_gc.groovy, run
// under Debian's groovy 2.4 against the stubs in tests/groovy/stubs (compiled
// by tests/groovy/run.sh, which starts this file; do not run it by hand).
//
//   fixtures.groovy REPO                     every test; prints PASS/FAIL lines
//   fixtures.groovy REPO dump SCENARIO ARG…  sets up SCENARIO, runs the dump
//                                            script with ARG… and prints its
//                                            output as the CLI would deliver it
//
// Each test builds the stub Jenkins state, then evaluates the real script the
// way Jenkins' `groovy =` CLI command does: a GroovyShell whose binding has
// `out` (the command's stdout) and `args`.
import com.cloudbees.hudson.plugins.folder.Folder
import groovy.json.JsonSlurper
import hudson.matrix.MatrixConfiguration
import hudson.matrix.MatrixProject
import hudson.matrix.MatrixRun
import hudson.model.*
import hudson.plugins.throttleconcurrents.ThrottleJobProperty
import hudson.slaves.OfflineCause
import jenkins.model.Jenkins
import org.jenkinsci.plugins.workflow.flow.FlowExecution
import org.jenkinsci.plugins.workflow.graph.FlowNode
import org.jenkinsci.plugins.workflow.job.WorkflowJob
import org.jenkinsci.plugins.workflow.job.WorkflowRun
import org.jenkinsci.plugins.workflow.support.actions.WorkspaceActionImpl
import org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution
import java.security.MessageDigest
import java.util.logging.Handler
import java.util.logging.Level
import java.util.logging.LogRecord
import java.util.logging.Logger

// The AMI ids the manager passes (today's 21-character form).
CURRENT = 'ami-0123456789abcdef0'
CURRENT_2 = 'ami-0fedcba9876543210'
OLD = 'ami-0aaaaaaaaaaaaaaaa'
STD_ARGS = [CURRENT, CURRENT_2, 'idle_minutes=45', 'hourly_billing=false']

repo = new File(args[0])
dumpScript = new File(repo, 'jenkins/get_queue_jobs.groovy')
gcScript = new File(repo, 'jenkins/run_gc.groovy')
approvals = new File(repo, 'jenkins/jobs/script-approvals.txt')

/** The stub Jenkins of one test, and helpers that fill it. */
class World {
    Jenkins j = Jenkins._reset()
    long now = System.currentTimeMillis()
    long nextQueueId = 100

    Folder folder(String path) {
        Folder parent = null
        path.split('/').each { parent = new Folder(_name: it, _parent: parent) }
        parent
    }

    static ParametersAction parametersAction(Map p) {
        new ParametersAction(p.collect { k, v -> v instanceof ParameterValue ? v : new StringParameterValue(k as String, v as String) })
    }

    /** A freestyle project; builtOn lists its builds' node names, oldest first. */
    FreeStyleProject freestyle(String path, String label, List<String> builtOn = []) {
        List<String> parts = path.split('/') as List
        def p = new FreeStyleProject(_name: parts[-1], _parent: parts.size() > 1 ? folder(parts[0..-2].join('/')) : null, _assignedLabel: label)
        builtOn.each { p._addBuild(new FreeStyleBuild(_builtOn: it)) }
        p
    }

    /** Puts a task on the queue. kind: waiting, buildable or blocked. */
    Queue.Item queue(Queue.Task task, Map params = [:], String kind = 'buildable') {
        long id = nextQueueId++
        Queue.Item item
        switch (kind) {
            case 'waiting': item = new Queue.WaitingItem(task, id); break
            case 'buildable': item = new Queue.BuildableItem(task, id); break
            case 'blocked': item = new Queue.BlockedItem(task, id); break
            default: throw new IllegalArgumentException(kind)
        }
        if (params) { item.addAction(parametersAction(params)) }
        j.queue._items << item
        item
    }

    /**
     * A Pipeline run; nodesUsed: node names its node blocks ran on, oldest first.
     * The job defines the parameters of its first parameterised run (a job may
     * define them beforehand: job._properties << new ParametersDefinitionProperty(…)).
     */
    WorkflowRun pipelineRun(WorkflowJob job, Map params = [:], List<String> nodesUsed = []) {
        def run = new WorkflowRun()
        job._addBuild(run)
        if (params && job.getProperty(ParametersDefinitionProperty) == null) {
            job._properties << new ParametersDefinitionProperty(params.keySet().collect { it as String })
        }
        if (params) { run.addAction(parametersAction(params)) }   // attached to the run, as Jenkins does
        def exec = new FlowExecution()
        FlowNode head = exec._add(new FlowNode(_id: '2'))
        int id = 3
        nodesUsed.each { n ->
            // node step start (with its workspace), a sh step inside, the block's end
            def start = exec._add(new FlowNode(_id: (id++).toString(), _parentIds: [head.id]))
            start.addAction(new WorkspaceActionImpl(n, '/jenkins/ws/' + job.name))
            def step = exec._add(new FlowNode(_id: (id++).toString(), _parentIds: [start.id]))
            head = exec._add(new FlowNode(_id: (id++).toString(), _parentIds: [step.id]))
        }
        exec._heads = [head.id]
        run._execution = exec
        run
    }

    WorkflowJob pipeline(String path) {
        List<String> parts = path.split('/') as List
        new WorkflowJob(_name: parts[-1], _parent: parts.size() > 1 ? folder(parts[0..-2].join('/')) : null)
    }

    /**
     * An agent. opts: labels, description, executors, busy, idleMin, connectedMin,
     * offline (an OfflineCause), connected, oneOff (flyweight tasks running there).
     */
    Computer agent(String name, Map opts = [:]) {
        def node = new Slave(_name: name, _labelString: opts.labels ?: 'dev swarm', _description: opts.description ?: '',
                             _numExecutors: opts.executors ?: 1, _dynamicLabels: opts.dynamicLabels ?: [])
        int total = opts.executors ?: 1
        int busy = opts.busy ?: 0
        def c = new Computer(_node: node, _executors: (0..<total).collect { it < busy },
                             _connectTime: now - ((opts.connectedMin ?: 120) as long) * 60000L,
                             _idleStart: now - ((opts.idleMin ?: 0) as long) * 60000L,
                             _connected: opts.containsKey('connected') ? opts.connected : true)
        if (opts.offline) { c._temporarilyOffline = true; c._offlineCause = opts.offline }
        c._oneOffExecutors = (0..<((opts.oneOff ?: 0) as int)).collect { new OneOffExecutor(_busy: true) }
        node._computer = c
        j._computers << c
        c
    }

    static String ours(String ami, String id = 'i-0123456789abcdef0') { "Created by Swarm InstanceID=${id} AmiId=${ami}".toString() }
}

/** Runs the dump script as Jenkins' CLI does; returns [text:, json:, stdout:]. */
Map runDump(List<String> words) {
    def sw = new StringWriter()
    def binding = new Binding()
    binding.setVariable('out', new PrintWriter(sw, true))
    def captured = new ByteArrayOutputStream()
    def realOut = System.out
    System.setOut(new PrintStream(captured, true))
    try {
        new GroovyShell(this.class.classLoader, binding).run(dumpScript.text, 'RemoteClass', words as String[])
    } finally {
        System.setOut(realOut)
    }
    String text = sw.toString()
    [text: text, json: new JsonSlurper().parseText(text), stdout: captured.toString()]
}

/** Every value in the dump is a string, as the original printed it. */
void assertAllStrings(Map dump) {
    assert dump.keySet() == ['build_queue', 'slave_queue', 'messages', 'controller_labels'] as Set
    dump.build_queue.each { item ->
        assert item.keySet() == ['jobName', 'labels', 'lastBuiltOn', 'throttleEnabled', 'parameters', 'queueId'] as Set
        item.each { k, v -> assert v instanceof String, "build_queue.${k}" }
    }
    dump.slave_queue.each { node ->
        assert node.keySet() == ['slaveName', 'labels', 'isOffLine', 'description', 'ami_id', 'ope_idle_count',
                                 'busy_executors', 'num_executors', 'connectTime', 'idle_seconds', 'terminate_me'] as Set
        node.each { k, v -> assert v instanceof String, "slave_queue.${k}" }
    }
    dump.messages.each { assert it instanceof String }
}

Map dumpOf(List<String> words = STD_ARGS) {
    def r = runDump(words)
    assert r.stdout == '', 'the script must print through the CLI (binding out), not System.out'
    assertAllStrings(r.json)
    r.json
}

Map queued(Map dump, String jobName) {
    def found = dump.build_queue.findAll { it.jobName == jobName }
    assert found.size() == 1, "${jobName} once in ${dump.build_queue*.jobName}"
    found[0]
}

Map nodeOf(Map dump, String name) {
    def found = dump.slave_queue.findAll { it.slaveName == name }
    assert found.size() == 1, "${name} once in ${dump.slave_queue*.slaveName}"
    found[0]
}

String offlineCauseOf(Computer c) { c._offlineCalls ? c._offlineCalls[-1][1].toString() : null }

/** The manager's job key (SPEC A5.2) of a dumped item, as the original computed it. */
String jobKey(Map item) {
    String p = item.parameters.trim().collect { (it as char) > 127 ? '?' : it }.join('').replace(' ', '_')
    item.jobName.replace('/', '_CHILD_') + '___' + MessageDigest.getInstance('MD5').digest(p.getBytes('US-ASCII')).encodeHex().toString()
}

/** Runs body; returns the WARNING (and worse) records Jenkins' ParametersAction logged meanwhile. */
List<LogRecord> parametersActionWarnings(Closure body) {
    Logger logger = Logger.getLogger(ParametersAction.name)
    List<LogRecord> records = []
    Handler h = new Handler() {
        void publish(LogRecord r) { if (r.level.intValue() >= Level.WARNING.intValue()) { records << r } }
        void flush() {}
        void close() {}
    }
    boolean parents = logger.useParentHandlers
    logger.addHandler(h)
    logger.useParentHandlers = false
    try {
        body()
    } finally {
        logger.removeHandler(h)
        logger.useParentHandlers = parents
    }
    records
}

// ------------------------------------------------------------ scenarios
// A scenario builds a World; the Rust test (tests/groovy_dump.rs) dumps
// 'contract' and feeds the output to the manager's own parser.
scenarios = [
    contract: {
        def w = new World()
        w.queue(w.freestyle('job-000', 'dev_spot', ['dev-10.0.1.7']), [BRANCH: 'master', BUILD_NO: '0'])
        w.queue(w.freestyle('folder/job-001', 'dev'))
        def mx = new MatrixProject(_name: 'mx', _parent: w.folder('team'), _assignedLabel: null)
        def cfg = new MatrixConfiguration(_name: 'label=dev_shared', _parent: mx, _assignedLabel: 'dev_shared')
        cfg._addBuild(new MatrixRun(_builtOn: 'dev-10.0.1.8'))
        w.queue(cfg, [GOAL: 'test'], 'buildable')
        def pj = w.pipeline('pipes/deploy')
        w.pipelineRun(pj, [ENV: 'prod'], ['prod-10.2.0.5'])
        def run = w.pipelineRun(pj, [ENV: 'prod'])
        w.queue(new ExecutorStepExecution.PlaceholderTask(run, 'prod_spot'), [:], 'buildable')   // quiet period 0
        w.queue(w.freestyle('blocked-job', 'dev'), [:], 'blocked')
        w.agent('dev-10.0.1.7', [labels: 'dev_spot swarm', description: World.ours(CURRENT, 'i-0aaaaaaaaaaaaaaa1'), idleMin: 50])
        w.agent('dev-10.0.1.8', [labels: 'dev_shared swarm', description: World.ours(CURRENT, 'i-0aaaaaaaaaaaaaaa2'), executors: 5, busy: 2, idleMin: 300])
        w.agent('prod-10.2.0.9', [labels: 'prod swarm', description: World.ours(OLD, 'i-0aaaaaaaaaaaaaaa3'), idleMin: 1])
        w.agent('static-builder', [labels: 'linux docker', description: 'a hand-made agent', idleMin: 600])
        w
    },
]

// ---------------------------------------------------------------- tests
tests = [:]
def test = { String name, Closure body -> tests[name] = body }

// ---- build queue
test('freestyle item: full name, label, parameters as Queue.Item.getParams(), last node, queue id') {
    def w = new World()
    def item = w.queue(w.freestyle('job-000', 'dev', ['dev-10.0.1.5', 'dev-10.0.1.7']), [BRANCH: 'master', BUILD_NO: '0'])
    def q = queued(dumpOf(), 'job-000')
    assert q == [jobName: 'job-000', labels: 'dev', lastBuiltOn: 'dev-10.0.1.7', throttleEnabled: 'false',
                 parameters: '\nBRANCH=master\nBUILD_NO=0', queueId: item.id.toString()]
}
test('item without parameters and never built: NONE and UNKNOWN') {
    def w = new World()
    w.queue(w.freestyle('fresh', 'dev_spot'))
    def q = queued(dumpOf(), 'fresh')
    assert q.parameters == 'NONE'
    assert q.lastBuiltOn == 'UNKNOWN'
}
test('folder job: the full name with its folders') {
    def w = new World()
    w.queue(w.freestyle('team/app/build', 'dev'))
    def d = dumpOf()
    assert d.build_queue*.jobName == ['team/app/build']
}
test('matrix configuration: its full name, its combination label, the node its last run used') {
    def w = new World()
    def mx = new MatrixProject(_name: 'mx', _parent: w.folder('team'))
    def cfg = new MatrixConfiguration(_name: 'label=dev_spot', _parent: mx, _assignedLabel: 'dev_spot')
    cfg._addBuild(new MatrixRun(_builtOn: 'dev-10.0.3.3'))
    w.queue(mx, [GOAL: 'all'], 'buildable')             // the parent: a flyweight, no label
    w.queue(cfg, [GOAL: 'all'], 'buildable')
    def d = dumpOf()
    assert queued(d, 'team/mx/label=dev_spot') == [jobName: 'team/mx/label=dev_spot', labels: 'dev_spot', lastBuiltOn: 'dev-10.0.3.3',
                                                 throttleEnabled: 'false', parameters: '\nGOAL=all', queueId: '101']
    assert queued(d, 'team/mx').labels == ''
}
test('Pipeline node(label) block: label of the step, job and parameters of its run, node of the last run that held one') {
    def w = new World()
    def job = w.pipeline('pipes/deploy')
    w.pipelineRun(job, [ENV: 'prod', DRY: new BooleanParameterValue('DRY', false)], ['prod-10.2.0.4', 'prod-10.2.0.5'])
    def run = w.pipelineRun(job, [ENV: 'prod', DRY: new BooleanParameterValue('DRY', true)])   // running, no node yet
    w.queue(new ExecutorStepExecution.PlaceholderTask(run, 'prod_spot_c5.large'))
    def q = queued(dumpOf(), 'pipes/deploy')
    assert q.labels == 'prod_spot_c5.large'
    assert q.parameters == '\nENV=prod\nDRY=true'
    assert q.lastBuiltOn == 'prod-10.2.0.5'
}
test('Pipeline: the newest node of the running run wins over older runs') {
    def w = new World()
    def job = w.pipeline('p')
    w.pipelineRun(job, [:], ['dev-10.0.0.1'])
    def run = w.pipelineRun(job, [:], ['dev-10.0.0.2', 'dev-10.0.0.3'])
    w.queue(new ExecutorStepExecution.PlaceholderTask(run, 'dev'))
    def q = queued(dumpOf(), 'p')
    assert q.lastBuiltOn == 'dev-10.0.0.3'
    assert q.parameters == 'NONE'
}
test('Pipeline never run on an agent: UNKNOWN; its own flyweight item has no label') {
    def w = new World()
    def job = w.pipeline('p2')
    def run = w.pipelineRun(job)
    w.queue(job)                                               // the run itself
    w.queue(new ExecutorStepExecution.PlaceholderTask(run, 'dev'))
    def d = dumpOf()
    assert d.build_queue.size() == 2
    assert d.build_queue.every { it.jobName == 'p2' && it.lastBuiltOn == 'UNKNOWN' }
    assert d.build_queue*.labels.sort() == ['', 'dev']
}
test('Pipeline node block whose run is gone: skipped, with a message') {
    def w = new World()
    w.queue(new ExecutorStepExecution.PlaceholderTask(null, 'dev'))
    def d = dumpOf()
    assert d.build_queue == []
    assert d.messages.any { it.contains('run is gone') }
}
test('blocked items and waiting ones (quiet period: may yet block) are skipped, buildable ones reported') {
    def w = new World()
    w.queue(w.freestyle('a', 'dev'), [:], 'blocked')
    w.queue(w.freestyle('b', 'dev'), [:], 'buildable')
    w.queue(w.freestyle('c', 'dev'), [:], 'waiting')
    assert dumpOf().build_queue*.jobName.sort() == ['b']
}
test('parameters: masked passwords, booleans, in order') {
    def w = new World()
    w.queue(w.freestyle('secret', 'dev'), [TOKEN: new PasswordParameterValue('TOKEN', 'hunter2'), A: 'x y', FLAG: new BooleanParameterValue('FLAG', true)])
    def q = queued(dumpOf(), 'secret')
    assert q.parameters == '\nTOKEN=****\nA=x y\nFLAG=true'
    assert !q.parameters.contains('hunter2')
}
test('last built on the built-in node; throttle plugin enabled') {
    def w = new World()
    def p = w.freestyle('t', 'dev', [''])
    p._properties << new ThrottleJobProperty(true)
    w.queue(p)
    def q = queued(dumpOf(), 't')
    assert q.lastBuiltOn == 'built-in'
    assert q.throttleEnabled == 'true'
}
test('label expressions are passed as Jenkins prints them') {
    def w = new World()
    w.queue(w.freestyle('x', 'linux && docker'))
    assert queued(dumpOf(), 'x').labels == 'linux && docker'
}

test('parameters are Queue.Item.getParams(): a newline before each, so the original job key matches') {
    def w = new World()
    w.queue(w.freestyle('job-000', 'dev_spot'), [BRANCH: 'master', BUILD_NO: '0'])
    def r = runDump(STD_ARGS)
    def q = queued(r.json, 'job-000')
    assert q.parameters == '\nBRANCH=master\nBUILD_NO=0'
    assert r.text.contains('"parameters":"\\nBRANCH=master\\nBUILD_NO=0"')      // JSON escapes the newline
    assert jobKey(q) == 'job-000___0229e1082c8dd9a2f7f2d7f51901a614'           // SPEC A5.2
}
test('a password parameter shows as NAME=**** (its short description), never its value') {
    def w = new World()
    w.queue(w.freestyle('deploy', 'dev'), [TOKEN: new PasswordParameterValue('TOKEN', 'hunter2')])
    def r = runDump(STD_ARGS)
    assert queued(r.json, 'deploy').parameters == '\nTOKEN=****'
    assert !r.text.contains('hunter2')
}
test('Pipeline node block: its run\'s parameters in the getParams() format, undefined ones too, no WARNING logged') {
    def w = new World()
    def job = w.pipeline('pipes/release')
    job._properties << new ParametersDefinitionProperty(['ENV', 'PASS'])
    def run = w.pipelineRun(job, [ENV: 'prod', PASS: new PasswordParameterValue('PASS', 's3cret'), EXTRA: '1'])   // EXTRA: not defined
    w.queue(new ExecutorStepExecution.PlaceholderTask(run, 'prod_spot'), [:], 'buildable')
    assert parametersActionWarnings { run.getAction(ParametersAction).parameters }.size() == 1   // what the script avoids
    Map d = null
    def warnings = parametersActionWarnings { d = dumpOf() }
    assert queued(d, 'pipes/release').parameters == '\nENV=prod\nPASS=****\nEXTRA=1'
    assert warnings*.message == []
}
test('a parameter Jenkins cannot describe costs that field (NONE), not the item') {
    def w = new World()
    def item = w.queue(w.freestyle('odd', 'dev_spot', ['dev-10.0.1.5']))
    item.addAction(new ParametersAction([new StringParameterValue('A', '1'), null]))   // createUpdated() can leave nulls
    def d = dumpOf()
    def q = queued(d, 'odd')
    assert q.parameters == 'NONE' && q.labels == 'dev_spot' && q.lastBuiltOn == 'dev-10.0.1.5'
    assert d.messages.any { it.startsWith("queue item ${item.id}: parameters cannot be read") }
}
test('Pipeline flow node the storage cannot load (a null parent): the item stays, older runs are searched') {
    def w = new World()
    def job = w.pipeline('p')
    w.pipelineRun(job, [:], ['dev-10.0.0.1'])
    def run = w.pipelineRun(job, [:], ['dev-10.0.0.2'])
    run._execution._nodes.remove('3')                 // the node block's start: getParents() of the next one has a null
    run._execution._add(new FlowNode(_id: '9', _parentIds: ['2', 'gone']))
    run._execution._heads << '9'
    w.queue(new ExecutorStepExecution.PlaceholderTask(run, 'dev'), [:], 'buildable')
    def q = queued(dumpOf(), 'p')
    assert q.lastBuiltOn == 'dev-10.0.0.1' && q.labels == 'dev'
}
test('Pipeline whose flow graph throws, or has no execution: lastBuiltOn UNKNOWN, the item and its parameters stay') {
    def w = new World()
    def broken = w.pipeline('broken')
    def run = w.pipelineRun(broken, [ENV: 'dev'], ['dev-10.0.0.1'])
    run._execution._failure = new IllegalStateException('program not loaded')
    def fresh = w.pipeline('fresh')
    def starting = w.pipelineRun(fresh, [ENV: 'qa'])
    starting._execution = null                          // WorkflowRun.getExecution() is @CheckForNull
    def item = w.queue(new ExecutorStepExecution.PlaceholderTask(run, 'dev_spot'), [:], 'buildable')
    w.queue(new ExecutorStepExecution.PlaceholderTask(starting, 'dev'), [:], 'buildable')
    def d = dumpOf()
    def q = queued(d, 'broken')
    assert [q.lastBuiltOn, q.parameters, q.labels, q.throttleEnabled] == ['UNKNOWN', '\nENV=dev', 'dev_spot', 'false']
    assert d.messages.any { it.startsWith("queue item ${item.id}: lastBuiltOn cannot be read") && it.contains('program not loaded') }
    assert queued(d, 'fresh').lastBuiltOn == 'UNKNOWN' && queued(d, 'fresh').parameters == '\nENV=qa'
}
test('items of jobs the CLI user cannot read still get agents (getItems() hides them)') {
    def w = new World()
    def secret = w.freestyle('hidden/build', 'dev_spot')
    secret._readable = false
    def pj = w.pipeline('hidden/pipe')
    pj._readable = false
    def run = w.pipelineRun(pj)
    w.queue(secret, [A: '1'])
    w.queue(new ExecutorStepExecution.PlaceholderTask(run, 'dev'), [:], 'buildable')
    w.queue(w.freestyle('open', 'dev'))
    assert w.j.queue.items*.task*.fullName == ['open']                     // what Queue.getItems() gives this user
    def d = dumpOf()
    assert d.build_queue*.jobName.sort() == ['hidden/build', 'hidden/pipe', 'open']
    assert queued(d, 'hidden/build').parameters == '\nA=1'
}

// ---- nodes
test('node fields: labels without the node name, executors, AMI as the whole token, times') {
    def w = new World()
    def c = w.agent('dev-10.0.1.8', [labels: 'dev_shared swarm', description: World.ours(CURRENT) + ' extra=1', executors: 5, busy: 2,
                                     dynamicLabels: ['linux'], connectedMin: 30])
    def n = nodeOf(dumpOf(), 'dev-10.0.1.8')
    assert n.labels == '[dev_shared, linux, swarm]'
    assert n.ami_id == CURRENT && n.ami_id.length() == 21
    assert n.description == World.ours(CURRENT) + ' extra=1'
    assert [n.busy_executors, n.num_executors, n.ope_idle_count] == ['2', '5', '3']
    assert n.isOffLine == 'false' && n.terminate_me == 'false'
    assert n.connectTime == c._connectTime.toString()
    assert n.idle_seconds == '0'        // busy: not idle
}
test('the built-in node is never reported') {
    def w = new World()
    w.agent('dev-10.0.1.9', [description: World.ours(CURRENT)])
    def d = dumpOf()
    assert d.slave_queue*.slaveName == ['dev-10.0.1.9']
}
test('ours, idle beyond idle_minutes: marked offline (groovy_script_killed_me) and terminate_me') {
    def w = new World()
    def c = w.agent('dev-10.0.1.7', [description: World.ours(CURRENT), idleMin: 46])
    def d = dumpOf()
    def n = nodeOf(d, 'dev-10.0.1.7')
    assert n.isOffLine == 'true' && n.terminate_me == 'true'
    assert (n.idle_seconds as long) >= 46 * 60
    assert c._offlineCalls.size() == 1 && c._offlineCalls[0][0] == true
    assert offlineCauseOf(c).contains('groovy_script_killed_me')
    assert c._offlineCalls[0][1] instanceof OfflineCause.ByCLI
    assert d.messages.any { it.startsWith('dev-10.0.1.7: idle 46 min') }
}
test('dry_run=true: the idle policy is reported, nothing is marked') {
    def w = new World()
    def c = w.agent('dev-10.0.1.7', [description: World.ours(CURRENT), idleMin: 46])
    def d = dumpOf(STD_ARGS + ['dry_run=true'])
    def n = nodeOf(d, 'dev-10.0.1.7')
    assert n.isOffLine == 'false' && n.terminate_me == 'false'
    assert c._offlineCalls == []
    assert d.messages.any { it.startsWith('dev-10.0.1.7: idle 46 min') && it.contains('would be marked offline') }
    assert !d.messages.any { it.contains('unknown setting') }
}
test('ours, idle but under idle_minutes: left alone') {
    def w = new World()
    def c = w.agent('dev-10.0.1.7', [description: World.ours(CURRENT), idleMin: 44])
    def n = nodeOf(dumpOf(), 'dev-10.0.1.7')
    assert n.isOffLine == 'false' && n.terminate_me == 'false'
    assert c._offlineCalls == []
}
test('idle_minutes comes from the arguments') {
    def w = new World()
    def c = w.agent('dev-10.0.1.7', [description: World.ours(CURRENT), idleMin: 11])
    assert nodeOf(dumpOf([CURRENT, 'idle_minutes=10']), 'dev-10.0.1.7').terminate_me == 'true'
    def w2 = new World()
    def c2 = w2.agent('dev-10.0.1.7', [description: World.ours(CURRENT), idleMin: 11])
    assert nodeOf(dumpOf([CURRENT]), 'dev-10.0.1.7').terminate_me == 'false'   // default 45
    assert c2._offlineCalls == []
}
test('ours, busy for hours: never marked, never terminate_me') {
    def w = new World()
    def c = w.agent('dev-10.0.1.8', [description: World.ours(CURRENT), executors: 5, busy: 1, idleMin: 300, connectedMin: 600])
    def n = nodeOf(dumpOf(STD_ARGS + ['hourly_billing=true']), 'dev-10.0.1.8')
    assert n.isOffLine == 'false' && n.terminate_me == 'false' && n.busy_executors == '1'
    assert c._offlineCalls == []
}
test('ours, old AMI, online and idle: drained (groovy_script_says_old_ami) and terminate_me') {
    def w = new World()
    def c = w.agent('prod-10.2.0.9', [description: World.ours(OLD), idleMin: 1])
    def d = dumpOf()
    def n = nodeOf(d, 'prod-10.2.0.9')
    assert n.ami_id == OLD
    assert n.isOffLine == 'true' && n.terminate_me == 'true'
    assert offlineCauseOf(c).contains('groovy_script_says_old_ami')
    assert d.messages.any { it.contains(OLD) }
}
test('ours, old AMI, online and busy: drained but not terminate_me yet') {
    def w = new World()
    def c = w.agent('prod-10.2.0.9', [description: World.ours(OLD), busy: 1])
    def n = nodeOf(dumpOf(), 'prod-10.2.0.9')
    assert n.isOffLine == 'true' && n.terminate_me == 'false'
    assert offlineCauseOf(c).contains('groovy_script_says_old_ami')
}
test('ours, old AMI, already offline and idle: terminate_me, not marked again') {
    def w = new World()
    def c = w.agent('prod-10.2.0.9', [description: World.ours(OLD), idleMin: 3, offline: new OfflineCause.ByCLI('groovy_script_says_old_ami')])
    def n = nodeOf(dumpOf(), 'prod-10.2.0.9')
    assert n.isOffLine == 'true' && n.terminate_me == 'true'
    assert c._offlineCalls == []
}
test('ours, offline by us earlier and idle: terminate_me; a build slipped on: not') {
    def w = new World()
    def idle = w.agent('dev-10.0.1.1', [description: World.ours(CURRENT), idleMin: 50, offline: new OfflineCause.ByCLI('groovy_script_killed_me')])
    def busy = w.agent('dev-10.0.1.2', [description: World.ours(CURRENT), busy: 1, offline: new OfflineCause.ByCLI('groovy_script_killed_me')])
    def d = dumpOf()
    assert nodeOf(d, 'dev-10.0.1.1').terminate_me == 'true'
    assert nodeOf(d, 'dev-10.0.1.2').terminate_me == 'false'
    assert idle._offlineCalls == [] && busy._offlineCalls == []
}
test('ours, offline on the manager\'s interruption, rebalance or warm-pool reason and idle: terminate_me; busy: not') {
    // The manager's offline-node -m texts (crates/core/src/plan/interruption.rs, plan/warm.rs): with its
    // .interrupted marker lost, the node must still go once idle, not stay offline for good; a warm-pool
    // agent is stopped only once its node is reported so.
    ['EC2 reclaims this spot instance in two minutes (spot interruption warning)',
     'draining: EC2 recommends rebalancing this spot instance',
     'warm pool: set up, to be stopped until a job of its label needs it'].each { reason ->
        def w = new World()
        def idle = w.agent('dev-10.0.3.1', [description: World.ours(CURRENT), idleMin: 2, offline: new OfflineCause.ByCLI(reason)])
        def busy = w.agent('dev-10.0.3.2', [description: World.ours(CURRENT), busy: 1, offline: new OfflineCause.ByCLI(reason)])
        def d = dumpOf()
        assert nodeOf(d, 'dev-10.0.3.1').terminate_me == 'true'
        assert nodeOf(d, 'dev-10.0.3.2').terminate_me == 'false'
        assert idle._offlineCalls == [] && busy._offlineCalls == []
    }
}
test('ours, taken offline by a person, current AMI: not terminate_me, not touched') {
    def w = new World()
    def c = w.agent('dev-10.0.1.3', [description: World.ours(CURRENT), idleMin: 500, offline: new OfflineCause.ByCLI('debugging a disk')])
    def n = nodeOf(dumpOf(), 'dev-10.0.1.3')
    assert n.isOffLine == 'true' && n.terminate_me == 'false'
    assert c._offlineCalls == []
}
test('hourly billing on: idle over 5 min after 50 min connected goes; under 50 min connected stays') {
    def w = new World()
    def late = w.agent('dev-10.0.2.1', [description: World.ours(CURRENT), idleMin: 6, connectedMin: 55])
    def early = w.agent('dev-10.0.2.2', [description: World.ours(CURRENT), idleMin: 6, connectedMin: 40])
    def fresh = w.agent('dev-10.0.2.3', [description: World.ours(CURRENT), idleMin: 4, connectedMin: 55])
    def d = dumpOf([CURRENT, 'idle_minutes=45', 'hourly_billing=true'])
    assert nodeOf(d, 'dev-10.0.2.1').terminate_me == 'true'
    assert offlineCauseOf(late).contains('groovy_script_killed_me')
    assert nodeOf(d, 'dev-10.0.2.2').terminate_me == 'false' && early._offlineCalls == []
    assert nodeOf(d, 'dev-10.0.2.3').terminate_me == 'false' && fresh._offlineCalls == []
}
test('hourly billing off (the default and false): the same agent stays') {
    [[CURRENT, 'idle_minutes=45', 'hourly_billing=false'], [CURRENT]].each { words ->
        def w = new World()
        def c = w.agent('dev-10.0.2.1', [description: World.ours(CURRENT), idleMin: 6, connectedMin: 55])
        assert nodeOf(dumpOf(words), 'dev-10.0.2.1').terminate_me == 'false'
        assert c._offlineCalls == []
    }
}
test('not ours (no "Created by Swarm"): idle for hours or on no AMI, never marked, never terminate_me') {
    def w = new World()
    def a = w.agent('static-builder', [labels: 'linux', description: 'hand-made AmiId=' + OLD, idleMin: 600])
    def b = w.agent('laptop', [labels: 'dev', description: '', idleMin: 600])
    def d = dumpOf(STD_ARGS + ['hourly_billing=true'])
    [nodeOf(d, 'static-builder'), nodeOf(d, 'laptop')].each { assert it.isOffLine == 'false' && it.terminate_me == 'false' }
    assert nodeOf(d, 'laptop').ami_id == 'UNKNOWN'
    assert a._offlineCalls == [] && b._offlineCalls == []
}
test('not ours, offline (even with our cause) or disconnected: never terminate_me') {
    def w = new World()
    w.agent('old-static', [description: 'hand-made', idleMin: 600, offline: new OfflineCause.ByCLI('groovy_script_killed_me')])
    w.agent('gone', [description: 'Created by Swarm InstanceID=i-1', idleMin: 600, connected: false])   // ours but no AmiId
    def d = dumpOf()
    assert nodeOf(d, 'old-static').terminate_me == 'false'
    assert nodeOf(d, 'gone').isOffLine == 'true' && nodeOf(d, 'gone').terminate_me == 'false'
}
test('ours, disconnected on an old AMI: terminate_me (nothing can run there)') {
    def w = new World()
    w.agent('dev-10.0.4.4', [description: World.ours(OLD), idleMin: 1, connected: false,
                             offline: new OfflineCause.ChannelTermination(new IOException('EOF'))])
    def n = nodeOf(dumpOf(), 'dev-10.0.4.4')
    assert n.isOffLine == 'true' && n.terminate_me == 'true'
}
test('no AMI ids given: no agent is drained for its AMI') {
    def w = new World()
    def c = w.agent('dev-10.0.1.7', [description: World.ours(OLD), idleMin: 1])
    def d = dumpOf(['idle_minutes=45'])
    assert nodeOf(d, 'dev-10.0.1.7').terminate_me == 'false'
    assert c._offlineCalls == []
    assert d.messages.any { it.contains('no AMI ids') }
}
test('bad and unknown settings: reported, defaults kept') {
    def w = new World()
    w.agent('dev-10.0.1.7', [description: World.ours(CURRENT), idleMin: 46])
    def d = dumpOf([CURRENT, 'idle_minutes=soon', 'colour=blue'])
    assert d.messages.any { it.contains('idle_minutes=soon') }
    assert d.messages.any { it.contains('colour=blue') }
    assert nodeOf(d, 'dev-10.0.1.7').terminate_me == 'true'
}
test('the AMI id is the whole word after AmiId=, wherever it stands') {
    def w = new World()
    w.agent('a', [description: "Created by Swarm AmiId=${CURRENT} InstanceID=i-1"])
    w.agent('b', [description: "InstanceID=i-2 AmiId=${CURRENT_2}, Created by Swarm"])
    def d = dumpOf()
    assert nodeOf(d, 'a').ami_id == CURRENT
    assert nodeOf(d, 'b').ami_id == CURRENT_2
    assert d.slave_queue.every { it.isOffLine == 'false' }   // both current: neither drained
}
test('the contract scenario: one of each kind, as the Rust test reads it') {
    scenarios.contract()
    def d = dumpOf()
    assert d.build_queue*.jobName == ['job-000', 'folder/job-001', 'team/mx/label=dev_shared', 'pipes/deploy']
    assert d.slave_queue*.terminate_me == ['true', 'false', 'true', 'false']
}

test('a flyweight task on a one-off executor makes the node busy: offline by us, but never terminate_me') {
    def w = new World()
    def killed = w.agent('dev-10.0.5.1', [description: World.ours(CURRENT), idleMin: 50, oneOff: 1,
                                          offline: new OfflineCause.ByCLI('groovy_script_killed_me')])
    def old = w.agent('dev-10.0.5.2', [description: World.ours(OLD), idleMin: 50, oneOff: 1])
    def idle = w.agent('dev-10.0.5.3', [description: World.ours(CURRENT), idleMin: 50, oneOff: 1])
    assert killed.countBusy() == 0 && !killed.isIdle()                       // Jenkins' own counts
    def d = dumpOf()
    def k = nodeOf(d, 'dev-10.0.5.1')
    assert k.terminate_me == 'false' && k.busy_executors == '1' && k.idle_seconds == '0' && k.ope_idle_count == '1'
    def o = nodeOf(d, 'dev-10.0.5.2')
    assert o.isOffLine == 'true' && o.terminate_me == 'false'                // drained, not gone yet
    assert offlineCauseOf(old).contains('groovy_script_says_old_ami')
    assert nodeOf(d, 'dev-10.0.5.3').terminate_me == 'false' && idle._offlineCalls == []
}
test('per-env AMIs: two envs of one region sharing an AMI id; an old one of a configured env is drained') {
    def w = new World()
    def dev = w.agent('dev-10.0.1.1', [labels: 'dev_spot swarm', description: World.ours(CURRENT), idleMin: 1])
    def qa = w.agent('qa-10.0.1.2', [labels: 'qa_shared_c4.xlarge swarm', description: World.ours(CURRENT), executors: 5, idleMin: 1])
    def qaOld = w.agent('qa-10.0.1.3', [labels: 'qa swarm', description: World.ours(OLD), idleMin: 1])
    def d = dumpOf(["ami:dev=${CURRENT}", "ami:qa=${CURRENT}", 'idle_minutes=45', 'hourly_billing=false', 'dry_run=false']*.toString())
    assert nodeOf(d, 'dev-10.0.1.1').isOffLine == 'false' && dev._offlineCalls == []
    assert nodeOf(d, 'qa-10.0.1.2').isOffLine == 'false' && qa._offlineCalls == []
    assert nodeOf(d, 'qa-10.0.1.3').terminate_me == 'true'
    assert offlineCauseOf(qaOld).contains('groovy_script_says_old_ami')
    assert !d.messages.any { it.contains('unknown setting') || it.contains('no AMI ids') }
}
test('per-env AMIs: an env without an AMI word, or a node of no env, is never drained') {
    def w = new World()
    def prod = w.agent('prod-10.2.0.1', [labels: 'prod_spot swarm', description: World.ours(OLD), idleMin: 1])
    def stage = w.agent('stage-10.3.0.1', [labels: 'stage swarm', description: World.ours(OLD), idleMin: 1])
    def lost = w.agent('lost-10.9.0.1', [labels: 'linux swarm', description: World.ours(OLD), idleMin: 1])
    def devOld = w.agent('dev-10.0.1.4', [labels: 'dev swarm', description: World.ours(OLD), idleMin: 1])
    def d = dumpOf(["ami:dev=${CURRENT}", 'ami:stage=', 'idle_minutes=45']*.toString())   // stage: an env with no current AMI
    [prod, stage, lost].each { assert it._offlineCalls == [] }
    assert ['prod-10.2.0.1', 'stage-10.3.0.1', 'lost-10.9.0.1'].every { nodeOf(d, it).terminate_me == 'false' }
    assert nodeOf(d, 'dev-10.0.1.4').terminate_me == 'true' && offlineCauseOf(devOld).contains('groovy_script_says_old_ami')
}
test('controller_labels names the controller\'s own labels, self label included') {
    new World()
    def d = dumpOf([])
    assert d.controller_labels == '[built-in, master_node]'
}
test('per-env and bare AMI words together: the env\'s word decides for its nodes, bare ids are ignored') {
    def w = new World()
    def devOn2 = w.agent('dev-10.0.1.5', [labels: 'dev_spot swarm', description: World.ours(CURRENT_2), idleMin: 1])
    def prodOn2 = w.agent('prod-10.2.0.2', [labels: 'prod swarm', description: World.ours(CURRENT_2), idleMin: 1])
    def prodOld = w.agent('prod-10.2.0.3', [labels: 'prod swarm', description: World.ours(OLD), idleMin: 1])
    def d = dumpOf(["ami:dev=${CURRENT}", CURRENT_2]*.toString())
    assert offlineCauseOf(devOn2).contains('groovy_script_says_old_ami')     // dev's AMI is CURRENT
    assert prodOn2._offlineCalls == []
    // prod is named by no ami: word: the manager could not retire it either.
    assert prodOld._offlineCalls == []
}
test('a malformed ami: word (env with a \'_\', no \'=\') is reported and ignored, never taken as a bare id') {
    def w = new World()
    def c = w.agent('dev-10.0.1.6', [labels: 'dev_spot swarm', description: World.ours(OLD), idleMin: 1])
    def d = dumpOf(["ami:dev_spot=${CURRENT}", 'ami:dev']*.toString())
    assert d.messages.any { it.startsWith('ami:dev_spot=') } && d.messages.any { it.startsWith('ami:dev:') }
    assert c._offlineCalls == []
}

// ---- run_gc.groovy
test('run_gc.groovy prints "Garbage collector executed: N freed." with N > 0 after garbage') {
    def garbage = (1..40).collect { new byte[1024 * 1024] }
    garbage = null
    def sw = new StringWriter()
    def binding = new Binding()
    binding.setVariable('out', new PrintWriter(sw, true))
    new GroovyShell(this.class.classLoader, binding).evaluate(gcScript.text, 'Script1.groovy')
    def lines = sw.toString().readLines()
    assert lines.size() == 1
    def m = lines[0] =~ /^Garbage collector executed: (\d+) freed\.$/
    assert m.matches()
    assert (m.group(1) as long) > 0
}
test('run_gc.groovy calls exactly the methods approved in script-approvals.txt') {
    // Every call in the script, as the script-security signature it needs.
    def ast = new org.codehaus.groovy.ast.builder.AstBuilder().buildFromString(
        org.codehaus.groovy.control.CompilePhase.SEMANTIC_ANALYSIS, false, gcScript.text)
    Map<String, String> typeOf = [:]
    Set<String> used = new TreeSet<String>()
    def visitor = new org.codehaus.groovy.ast.CodeVisitorSupport() {
        void visitDeclarationExpression(org.codehaus.groovy.ast.expr.DeclarationExpression e) {
            typeOf[e.variableExpression.name] = e.variableExpression.originType.name
            super.visitDeclarationExpression(e)
        }
        void visitMethodCallExpression(org.codehaus.groovy.ast.expr.MethodCallExpression e) {
            def recv = e.objectExpression
            if (recv instanceof org.codehaus.groovy.ast.expr.ClassExpression) {
                used << "staticMethod ${recv.type.name} ${e.methodAsString}".toString()
            } else if (recv instanceof org.codehaus.groovy.ast.expr.VariableExpression && recv.name == 'this') {
                used << "method groovy.lang.Script ${e.methodAsString} java.lang.Object".toString()
            } else if (recv instanceof org.codehaus.groovy.ast.expr.VariableExpression) {
                assert typeOf[recv.name] && typeOf[recv.name] != 'java.lang.Object', "declare the type of ${recv.name}"
                used << "method ${typeOf[recv.name]} ${e.methodAsString}".toString()
            } else {
                assert false, "unexpected call ${e.text}"
            }
            super.visitMethodCallExpression(e)
        }
        void visitStaticMethodCallExpression(org.codehaus.groovy.ast.expr.StaticMethodCallExpression e) {
            used << "staticMethod ${e.ownerType.name} ${e.method}".toString()
            super.visitStaticMethodCallExpression(e)
        }
    }
    ast.findAll { it instanceof org.codehaus.groovy.ast.stmt.BlockStatement }.each { it.visit(visitor) }
    Set<String> approved = approvals.readLines()*.trim().findAll { it && !it.startsWith('#') } as TreeSet
    assert used == approved
}

// ------------------------------------------------------------------ main
if (args.length > 1 && args[1] == 'dump') {
    def scenario = scenarios[args[2]]
    if (scenario == null) { System.err.println("no scenario ${args[2]}; known: ${scenarios.keySet()}"); System.exit(2) }
    scenario()
    def r = runDump(args.length > 3 ? (args[3..-1] as List) : STD_ARGS)
    print r.text
    return
}
int failed = 0
tests.each { String name, Closure body ->
    try {
        body()
        println "PASS groovy: ${name}"
    } catch (Throwable t) {
        failed++
        println "FAIL groovy: ${name}"
        println t.toString().readLines().collect { '    ' + it }.join('\n')
    }
}
System.exit(failed ? 1 : 0)
