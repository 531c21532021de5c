// get_queue_jobs.groovy: the dump slave_manager reads every pass (SPEC A5.1),
// and the idle policy (SPEC A6) applied to the agents the manager created.
//
// Run by the manager through the Jenkins CLI, script on stdin:
//   groovy = [ami:ENV=ami-id]... [ami-id]... [idle_minutes=45] [hourly_billing=false] [dry_run=true]
// ami:ENV=ami-id names the current AMI of one env (ENV as in environment.json:
// '-' allowed, '_' not); ami:ENV= names an env that has none. A node's env is
// read from its labels (SPEC A4); it runs an old AMI only if that env has a
// current AMI and the node's differs; a node of no named env is never old.
// Without any ami: word, the bare ami-id words decide (the original's form:
// old = not in that list); with them, bare ids are ignored (the manager sends
// both, for a --groovy script of the original's shape). Other words with '='
// are settings.
// Prints one JSON object; every value is a string, as the original printed:
//   build_queue: [{jobName, labels, lastBuiltOn, throttleEnabled, parameters, queueId}]
//                parameters as Queue.Item.getParams() gives it ("\nK=V" each) or NONE
//   slave_queue: [{slaveName, labels, isOffLine, description, ami_id, ope_idle_count,
//                  busy_executors, num_executors, connectTime, idle_seconds, terminate_me}]
//   messages:    what this run did or could not read, one line each.
//   controller_labels: the controller's own labels, "[built-in, master_node]".
// Needs only Jenkins core (2.4xx LTS, Groovy 2.4); Pipeline, folders, matrix
// and throttle-concurrents are read when present, by class name, never imported.
import groovy.json.JsonOutput
import groovy.transform.Field
import hudson.model.Computer
import hudson.model.Queue
import hudson.slaves.OfflineCause
import jenkins.model.Jenkins

@Field static final String PLACEHOLDER_TASK = 'org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask'
@Field static final String WORKSPACE_ACTION = 'org.jenkinsci.plugins.workflow.actions.WorkspaceAction'
@Field static final String THROTTLE_PROPERTY = 'hudson.plugins.throttleconcurrents.ThrottleJobProperty'
@Field static final String KILLED = 'groovy_script_killed_me'
@Field static final String OLD_AMI = 'groovy_script_says_old_ami'
/**
 * The manager's offline-node -m texts for a spot agent EC2 warned of or recommended rebalancing
 * (crates/core/src/plan/interruption.rs): should its .interrupted marker be lost, the node still
 * goes once idle instead of staying offline for good.
 */
@Field static final String INTERRUPTED = 'EC2 reclaims this spot instance in two minutes (spot interruption warning)'
@Field static final String REBALANCED = 'draining: EC2 recommends rebalancing this spot instance'
/**
 * The manager's offline-node -m text for a warm-pool agent it is about to stop (crates/core/src/plan/warm.rs):
 * it stops the agent only once this dump reports the node terminate_me (offline by us, no build on it).
 */
@Field static final String WARM = 'warm pool: set up, to be stopped until a job of its label needs it'
/** Only agents whose description says this were made by the manager (its slave_data tag). */
@Field static final String CREATED_BY = 'Created by Swarm'
/** How many earlier Pipeline runs, and flow nodes per run, are searched for the last agent used. */
@Field static final int RUNS_SEARCHED = 3
@Field static final int FLOW_NODES_SEARCHED = 2000

@Field List<String> messages = []

// ---------------------------------------------------------------- arguments
/** env → its current AMI id ('' = the env has none). */
@Field Map<String, String> envAmis = [:]
/** The bare ami-id words: current anywhere. */
@Field Set<String> amis = new LinkedHashSet<String>()
Map<String, String> settings = [idle_minutes: '45', hourly_billing: 'false', dry_run: 'false']
List<String> words = binding.hasVariable('args') && args != null ? (args as List).collect { it.toString() } : []
for (String word : words) {
    int eq = word.indexOf('=')
    if (word.startsWith('ami:')) {
        String env = eq > 0 ? word.substring(4, eq) : ''
        if (!(env ==~ /[^_\s=]+/)) {
            // Never a bare id: one stray word would make every other node's AMI old.
            messages << "${word}: not ami:ENV=ami-id (ENV without '_' or blanks), ignored".toString()
        } else {
            if (envAmis.containsKey(env)) { messages << "${word}: ${env} given twice, the last one counts".toString() }
            envAmis[env] = word.substring(eq + 1).trim()
        }
    } else if (eq > 0) {
        String key = word.substring(0, eq)
        if (settings.containsKey(key)) {
            settings[key] = word.substring(eq + 1)
        } else {
            messages << "unknown setting ${word}, ignored".toString()
        }
    } else if (word.trim()) {
        amis << word.trim()
    }
}
long idleMinutes = 45L
if (settings.idle_minutes ==~ /\d+/ && (settings.idle_minutes as long) > 0) {
    idleMinutes = settings.idle_minutes as long
} else {
    messages << "idle_minutes=${settings.idle_minutes} is not a positive number; using 45".toString()
}
boolean hourlyBilling = settings.hourly_billing.equalsIgnoreCase('true')
// The manager's --dry_run and check: report what the idle policy would do,
// mark nothing.
@Field boolean dryRun = false
dryRun = settings.dry_run.equalsIgnoreCase('true')
long idleLimitMs = idleMinutes * 60000L
long now = System.currentTimeMillis()

// ------------------------------------------------------------------ helpers
/** True when o's class, a superclass or an interface is called name (plugins may be absent). */
boolean isA(Object o, String name) {
    if (o == null) { return false }
    List<Class> todo = [o.getClass()]
    Set<Class> seen = new HashSet<Class>()
    while (todo) {
        Class c = todo.remove(0)
        if (c == null || !seen.add(c)) { continue }
        if (c.name == name) { return true }
        todo << c.superclass
        todo.addAll(c.interfaces as List)
    }
    false
}

/**
 * Parameters as the original printed them, Queue.Item.getParams(): "\nK=V" per
 * parameter (short descriptions: passwords are K=****), NONE when empty. The
 * manager's job key is an md5 of this text, so it must not change.
 */
String itemParameters(Queue.Item item) {
    item.params ?: 'NONE'
}

/**
 * The same text for a Pipeline node block, from its run's parameters (the
 * block's queue item has none). getAllParameters(): getParameters() logs a
 * WARNING per parameter the job does not define, on every call, and drops it;
 * getParams() on the run's own queue item included it, so this does too.
 */
String runParameters(Object run) {
    StringBuilder s = new StringBuilder()
    for (def pa : run.getActions(hudson.model.ParametersAction)) {
        for (def p : pa.allParameters) {
            s.append('\n').append(p.shortDescription)
        }
    }
    s.toString() ?: 'NONE'
}

String fullNameOf(Object job) {
    job.metaClass.respondsTo(job, 'getFullName') ? job.fullName : job.fullDisplayName
}

/** A node name as the manager reads it; Jenkins records the built-in node as ''. */
String nodeName(String name) {
    name == null ? 'UNKNOWN' : (name == '' ? 'built-in' : name)
}

/**
 * The node where a Pipeline run last held a workspace: the newest WorkspaceAction
 * in its flow graph. The execution is null before the run starts or when it
 * failed to load; a parent the storage cannot load is null.
 */
String pipelineNodeOf(Object run) {
    def execution = run.metaClass.respondsTo(run, 'getExecution') ? run.execution : null
    if (execution == null) { return null }
    List todo = new ArrayList(execution.currentHeads ?: [])
    Set<String> seen = new HashSet<String>()
    int visited = 0
    while (todo && visited < FLOW_NODES_SEARCHED) {
        def flowNode = todo.remove(0)
        if (flowNode == null || !seen.add(flowNode.id)) { continue }
        visited++
        def ws = flowNode.actions.find { isA(it, WORKSPACE_ACTION) && it.node != null }
        if (ws != null) { return nodeName(ws.node) }
        todo.addAll(flowNode.parents ?: [])
    }
    null
}

/** Name of the node the job's last build ran on, UNKNOWN when not known. */
String lastBuiltOnOf(Object job) {
    def build = job.metaClass.respondsTo(job, 'getLastBuild') ? job.lastBuild : null
    for (int i = 0; build != null && i < RUNS_SEARCHED; i++) {
        if (build.metaClass.respondsTo(build, 'getBuiltOnStr')) {
            return nodeName(build.builtOnStr)        // freestyle, matrix: recorded on the build
        }
        String found = pipelineNodeOf(build)
        if (found != null) { return found }
        build = build.previousBuild                  // a running Pipeline may not have a node yet
    }
    'UNKNOWN'
}

String throttleOf(Object job) {
    if (!job.metaClass.respondsTo(job, 'getAllProperties')) { return 'false' }
    def p = job.allProperties.find { it.getClass().name == THROTTLE_PROPERTY }
    (p != null && p.throttleEnabled).toString()
}

/** One field of a queue item; a failure costs the field (its default), never the item and its agent. */
String field(Queue.Item item, String name, String fallback, Closure<String> read) {
    try {
        String value = read()
        return value == null ? fallback : value
    } catch (Exception e) {
        messages << "queue item ${item.id}: ${name} cannot be read (${e}); ${fallback} reported".toString()
        return fallback
    }
}

/** The build_queue entry of an item; null when it is not reported. */
Map<String, String> queueEntry(Queue.Item item) {
    def task = item.task
    def job = task
    def run = null
    if (isA(task, PLACEHOLDER_TASK)) {
        // A Pipeline node('label') block: the job and the parameters are its run's.
        run = task.runForDisplay()
        if (run == null) {
            messages << "queue item ${item.id}: a Pipeline node block whose run is gone, skipped".toString()
            return null
        }
        job = run.parent
    }
    [
        jobName        : fullNameOf(job),
        labels         : item.assignedLabel?.toString() ?: '',
        lastBuiltOn    : field(item, 'lastBuiltOn', 'UNKNOWN') { lastBuiltOnOf(job) },
        throttleEnabled: field(item, 'throttleEnabled', 'false') { throttleOf(job) },
        parameters     : field(item, 'parameters', 'NONE') { run != null ? runParameters(run) : itemParameters(item) },
        queueId        : item.id.toString(),
    ]
}

/** A node's env (SPEC A4): a label that is an env, else the one env named by a label's '_'-separated parts; first label wins. */
String envOf(List<String> labels) {
    for (String label : labels) {
        if (envAmis.containsKey(label)) { return label }
        List<String> named = (label.split('_') as List).findAll { envAmis.containsKey(it) }.unique()
        if (named.size() == 1) { return named[0] }
    }
    null
}

/**
 * Old: the node's env has a current AMI that differs. With ami: words, a node
 * of no named env is never old (the manager cannot retire it either: draining
 * it would only take capacity away); without them, old = not a bare id.
 */
boolean isOldAmi(String ami, String env) {
    if (ami == null) { return false }
    if (!envAmis.isEmpty()) {
        String current = env != null ? envAmis[env] : null
        return current && ami != current
    }
    !amis.isEmpty() && !amis.contains(ami)
}

/**
 * Executors at work. countBusy() counts regular executors only; a flyweight
 * task (a Pipeline run, a matrix parent) holds a one-off executor, which
 * exists only while its task runs (Computer.isIdle() counts it as work too).
 */
int busyExecutors(Computer c) {
    c.countBusy() + c.oneOffExecutors.size()
}

/** The whole word after AmiId= (today's ids are 21 characters); null when absent. */
String amiOf(String description) {
    def m = description =~ /AmiId=([^\s,]+)/
    m.find() ? m.group(1) : null
}

boolean offlineByUs(Computer c) {
    def cause = c.offlineCause
    if (cause == null) { return false }
    String text = cause.toString()
    if (cause.metaClass.hasProperty(cause, 'message') && cause.message != null) { text += ' ' + cause.message }
    [KILLED, OLD_AMI, INTERRUPTED, REBALANCED, WARM].any { text.contains(it) }
}

void markOffline(Computer c, String why, String detail) {
    if (dryRun) {
        messages << "${c.name}: ${detail}; would be marked offline (${why}), dry run".toString()
        return
    }
    c.setTemporarilyOffline(true, new OfflineCause.ByCLI(why))
    messages << "${c.name}: ${detail}; marked offline (${why})".toString()
}

Jenkins jenkins = Jenkins.get()

// -------------------------------------------------------------- build queue
// getBuildableItems() (buildable and pending), as the original kept only
// buildable items: a waiting item is in its quiet period and may yet become
// blocked (a running build of the same job, a lock, a throttle), so an agent
// started for it would idle. Blocked items wait for a lock, not an agent. And
// not getItems(): it hides tasks that are not access controlled.
List<Map<String, String>> buildQueue = []
for (Queue.Item item : jenkins.queue.buildableItems) {
    try {
        Map<String, String> entry = queueEntry(item)
        if (entry != null) { buildQueue << entry }
    } catch (Exception e) {
        messages << "queue item ${item.id}: cannot be read (${e}), skipped".toString()
    }
}

// -------------------------------------------------------------------- nodes
List<Map<String, String>> slaveQueue = []
if (amis.isEmpty() && !envAmis.values().any()) {
    messages << 'no AMI ids given: no agent is retired for its AMI'
}
for (Computer c : jenkins.computers) {
    def node = c.node
    if (node == null || node.is(jenkins) || c instanceof Jenkins.MasterComputer) { continue }
    String name = node.nodeName
    String description = node.nodeDescription ?: ''
    String ami = amiOf(description)
    boolean ours = description.contains(CREATED_BY) && ami != null
    int busy = busyExecutors(c)
    long idleMs = busy == 0 ? Math.max(0L, now - c.idleStartMilliseconds) : 0L
    long connectedMs = c.connectTime > 0 ? Math.max(0L, now - c.connectTime) : 0L
    List<String> labels = node.assignedLabels.findAll { !it.isSelfLabel() && it.name != name }*.name.sort()
    boolean oldAmi = isOldAmi(ami, envOf(labels))
    boolean terminateMe = false
    if (ours) {
        if (!c.offline && oldAmi) {
            markOffline(c, OLD_AMI, "AMI ${ami} is not current, draining")
        } else if (!c.offline && busy == 0) {
            if (idleMs > idleLimitMs) {
                markOffline(c, KILLED, "idle ${idleMs.intdiv(60000L)} min > ${idleMinutes}")
            } else if (hourlyBilling && idleMs > 5L * 60000L && connectedMs > 50L * 60000L) {
                markOffline(c, KILLED, "idle ${idleMs.intdiv(60000L)} min near the end of a billed hour")
            }
        }
        // Gone only once no build runs there: offline by us, or offline on an old AMI.
        terminateMe = c.offline && busy == 0 && (offlineByUs(c) || oldAmi)
    }
    slaveQueue << [
        slaveName     : name,
        labels        : '[' + labels.join(', ') + ']',
        isOffLine     : c.offline.toString(),
        description   : description,
        ami_id        : ami ?: 'UNKNOWN',
        ope_idle_count: c.countIdle().toString(),
        busy_executors: busy.toString(),
        num_executors : c.countExecutors().toString(),
        connectTime   : c.connectTime.toString(),
        idle_seconds  : idleMs.intdiv(1000L).toString(),
        terminate_me  : terminateMe.toString(),
    ]
}

// The controller's own labels (its self label, master_node, …): an item bound
// to one runs on the controller and needs no agent of ours.
String controllerLabels = '[' + jenkins.assignedLabels*.name.findAll { it }.sort().join(', ') + ']'

println JsonOutput.toJson([build_queue: buildQueue, slave_queue: slaveQueue, messages: messages,
                           controller_labels: controllerLabels])
