package org.jenkinsci.plugins.workflow.support.steps

import hudson.model.Label
import hudson.model.Node
import hudson.model.Queue
import hudson.model.Run
import hudson.security.AccessControlled
import hudson.security.Permission
import jenkins.model.Jenkins

/** The node step's execution; what matters here is its queue task. */
class ExecutorStepExecution {
    /**
     * What a Pipeline node('label') block puts on the queue. Its owner task
     * is the job of the run it belongs to (itself when the run is gone).
     */
    static class PlaceholderTask implements Queue.Task, AccessControlled {
        String _label
        Run _run

        PlaceholderTask(Run run, String label) { _run = run; _label = label }

        Label getAssignedLabel() {
            if (_label == null) { return null }
            _label.isEmpty() ? Label.get('built-in') : Label.get(_label)
        }

        /** Jenkins: the node NAMED like the label, not where the job last ran. */
        Node getLastBuiltOn() { _label == null ? null : Jenkins.get().getNode(_label) }

        Queue.Task getOwnerTask() {
            Run r = runForDisplay()
            (r != null && r.parent instanceof Queue.Task) ? (Queue.Task) r.parent : this
        }

        Run run() { _run }

        /** Jenkins: the run's ACL (its job's); the root's when the run is gone. */
        boolean hasPermission(Permission permission) { _run == null || _run.parent.hasPermission(permission) }

        Run runForDisplay() { run() }

        String getDisplayName() { 'part of ' + (_run?.fullDisplayName ?: '?') }

        String getName() { getDisplayName() }

        String getFullDisplayName() { getDisplayName() }

        String getUrl() { '' }

        @Override String toString() { 'ExecutorStepExecution.PlaceholderTask{label=' + _label + '}' }
    }
}
