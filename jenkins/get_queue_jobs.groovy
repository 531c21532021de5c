// Prints the dump slave_manager reads (SPEC A5.1): the buildable queue items
// and the nodes, every value a string. Arguments: the current AMI id of every
// env, then optional key=value settings (idle_minutes=45).
// It also applies the idle policy (SPEC A6) to the nodes the manager created.
import groovy.json.JsonOutput
import hudson.model.Queue
import hudson.slaves.OfflineCause

def jenkins = jenkins.model.Jenkins.get()
def amis = [] as Set
def settings = [idle_minutes: '45', hourly_billing: 'false']
(this.args ?: []).each { a ->
    if (a.contains('=')) { def kv = a.split('=', 2); settings[kv[0]] = kv[1] } else { amis << a }
}
long idleLimitMs = (settings.idle_minutes as long) * 60000L
boolean hourly = settings.hourly_billing == 'true'
long now = System.currentTimeMillis()
def messages = []

def buildQueue = []
jenkins.queue.items.each { item ->
    if (item instanceof Queue.BlockedItem) { return }
    def task = item.task
    def label = item.assignedLabel?.toString() ?: ''
    def job = task
    // Pipeline node('label') steps queue a placeholder task owned by the run.
    if (task.class.name.endsWith('PlaceholderTask')) {
        job = task.ownerTask
    }
    def lastBuiltOn = 'UNKNOWN'
    try { lastBuiltOn = job.lastBuild?.builtOnStr ?: 'UNKNOWN' } catch (ignored) { }
    if (lastBuiltOn == '') { lastBuiltOn = 'master' }
    def params = item.params?.trim() ?: ''
    buildQueue << [jobName: job.fullName, labels: label, lastBuiltOn: lastBuiltOn,
                   throttleEnabled: 'false', parameters: params ?: 'NONE', queueId: item.id.toString()]
}

def slaveQueue = []
jenkins.computers.each { c ->
    def node = c.node
    if (node == null || node == jenkins) { return }
    def description = node.nodeDescription ?: ''
    def m = description =~ /AmiId=(\S+)/
    def ami = m.find() ? m.group(1) : 'UNKNOWN'
    def ours = description.contains('Created by Swarm') && ami != 'UNKNOWN'
    int busy = c.countBusy()
    long idleMs = c.isIdle() ? now - c.idleStartMilliseconds : 0L
    long connectedMs = c.connectTime > 0 ? now - c.connectTime : 0L
    boolean terminateMe = false
    if (ours && busy == 0) {
        if (!c.isOffline() && !amis.contains(ami)) {
            c.setTemporarilyOffline(true, new OfflineCause.ByCLI('groovy_script_says_old_ami'))
            messages << "${node.nodeName}: old AMI ${ami}, marked offline to drain".toString()
        }
        boolean tooIdle = idleMs > idleLimitMs || (hourly && idleMs > 300000L && connectedMs > 3000000L)
        if (!c.isOffline() && tooIdle) {
            c.setTemporarilyOffline(true, new OfflineCause.ByCLI('groovy_script_killed_me'))
            messages << "${node.nodeName}: idle ${idleMs.intdiv(1000)} s, marked offline".toString()
        }
        def cause = c.offlineCause?.toString() ?: ''
        terminateMe = c.isOffline() && (cause.contains('groovy_script_killed_me') || cause.contains('groovy_script_says_old_ami'))
    }
    slaveQueue << [slaveName: node.nodeName, labels: '[' + (node.labelString ?: '').split(/\s+/).findAll { it }.join(', ') + ']',
                   isOffLine: c.isOffline().toString(), description: description, ami_id: ami,
                   ope_idle_count: c.countIdle().toString(), busy_executors: busy.toString(),
                   num_executors: c.countExecutors().toString(), connectTime: c.connectTime.toString(),
                   idle_seconds: idleMs.intdiv(1000).toString(), terminate_me: terminateMe.toString()]
}

println JsonOutput.toJson([build_queue: buildQueue, slave_queue: slaveQueue, messages: messages])
