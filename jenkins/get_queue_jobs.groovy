// get_queue_jobs.groovy: the dump slave_manager reads every pass (SPEC A5.1),
// and the idle policy (SPEC A6) applied to the agents the manager created.
//
// Run by the manager through the Jenkins CLI, script on stdin:
//   groovy = <ami-id>... [idle_minutes=45] [hourly_billing=false] [dry_run=true]
// Words with '=' are settings, the others are the current AMI id of every env.
// Prints one JSON object; every value is a string, as the original printed:
//   build_queue: [{jobName, labels, lastBuiltOn, throttleEnabled, parameters, queueId}]
//   slave_queue: [{slaveName, labels, isOffLine, description, ami_id, ope_idle_count,
//                  busy_executors, num_executors, connectTime, idle_seconds, terminate_me}]
//   messages:    what this run did or could not read, one line each.
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
/** Only agents whose description says this were made by the manager (its slave_data tag). */
@Field static final String CREATED_BY = 'Created by Swarm'
/** How many earlier Pipeline runs, and flow nodes per run, are searched for the last agent used. */
@Field static final int RUNS_SEARCHED = 3
@Field static final int FLOW_NODES_SEARCHED = 2000

@Field List<String> messages = []

// ---------------------------------------------------------------- arguments
Set<String> amis = new LinkedHashSet<String>()
Map<String, String> settings = [idle_minutes: '45', hourly_billing: 'false', dry_run: 'false']
List<String> words = binding.hasVariable('args') && args != null ? (args as List).collect { it.toString() } : []
for (String word : words) {
    int eq = word.indexOf('=')
    if (eq > 0) {
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

/** Parameters as the original printed them: K=V words joined by a space, masked as Jenkins masks them; NONE when none. */
String parametersOf(Object actionable) {
    List<String> out = []
    if (actionable != null) {
        for (def pa : actionable.getActions(hudson.model.ParametersAction)) {
            for (def p : pa.parameters) {
                String d = p.shortDescription
                if (d != null && d.trim()) { out << d.trim() }
            }
        }
    }
    out ? out.join(' ') : 'NONE'
}

String fullNameOf(Object job) {
    job.metaClass.respondsTo(job, 'getFullName') ? job.fullName : job.fullDisplayName
}

/** A node name as the manager reads it; Jenkins records the built-in node as ''. */
String nodeName(String name) {
    name == null ? 'UNKNOWN' : (name == '' ? 'built-in' : name)
}

/** The node where a Pipeline run last held a workspace: the newest WorkspaceAction in its flow graph. */
String pipelineNodeOf(Object run) {
    def execution = run.metaClass.respondsTo(run, 'getExecution') ? run.execution : null
    if (execution == null) { return null }
    List todo = new ArrayList(execution.currentHeads)
    Set<String> seen = new HashSet<String>()
    int visited = 0
    while (todo && visited < FLOW_NODES_SEARCHED) {
        def flowNode = todo.remove(0)
        if (!seen.add(flowNode.id)) { continue }
        visited++
        def ws = flowNode.actions.find { isA(it, WORKSPACE_ACTION) }
        if (ws != null) { return nodeName(ws.node) }
        todo.addAll(flowNode.parents)
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
    text.contains(KILLED) || text.contains(OLD_AMI)
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
List<Map<String, String>> buildQueue = []
for (Queue.Item item : jenkins.queue.items) {
    if (item instanceof Queue.BlockedItem) { continue }    // waits for a lock, not for an agent
    def task = item.task
    def job = task
    def paramsFrom = item
    if (isA(task, PLACEHOLDER_TASK)) {
        // A Pipeline node('label') block: the job and the parameters are its run's.
        def run = task.runForDisplay()
        if (run == null) {
            messages << "queue item ${item.id}: a Pipeline node block whose run is gone, skipped".toString()
            continue
        }
        job = run.parent
        paramsFrom = run
    }
    try {
        buildQueue << [
            jobName        : fullNameOf(job),
            labels         : item.assignedLabel?.toString() ?: '',
            lastBuiltOn    : lastBuiltOnOf(job),
            throttleEnabled: throttleOf(job),
            parameters     : parametersOf(paramsFrom),
            queueId        : item.id.toString(),
        ]
    } catch (Exception e) {
        messages << "queue item ${item.id}: cannot be read (${e}), skipped".toString()
    }
}

// -------------------------------------------------------------------- nodes
List<Map<String, String>> slaveQueue = []
if (amis.isEmpty()) {
    messages << 'no AMI ids given: no agent is retired for its AMI'
}
for (Computer c : jenkins.computers) {
    def node = c.node
    if (node == null || node.is(jenkins) || c instanceof Jenkins.MasterComputer) { continue }
    String name = node.nodeName
    String description = node.nodeDescription ?: ''
    String ami = amiOf(description)
    boolean ours = description.contains(CREATED_BY) && ami != null
    int busy = c.countBusy()
    long idleMs = busy == 0 ? Math.max(0L, now - c.idleStartMilliseconds) : 0L
    long connectedMs = c.connectTime > 0 ? Math.max(0L, now - c.connectTime) : 0L
    boolean oldAmi = !amis.isEmpty() && ami != null && !amis.contains(ami)
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
    List<String> labels = node.assignedLabels.findAll { !it.isSelfLabel() && it.name != name }*.name.sort()
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

println JsonOutput.toJson([build_queue: buildQueue, slave_queue: slaveQueue, messages: messages])
