package org.jenkinsci.plugins.workflow.job

import hudson.model.Job
import hudson.model.Label
import hudson.model.Node
import hudson.model.Queue

/** A Pipeline job: its run is a flyweight task; node blocks queue PlaceholderTasks. */
class WorkflowJob extends Job implements Queue.FlyweightTask {
    Label getAssignedLabel() { null }

    Node getLastBuiltOn() { null }

    Queue.Task getOwnerTask() { this }
}
