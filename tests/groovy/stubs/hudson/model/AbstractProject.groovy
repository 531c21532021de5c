package hudson.model

/** hudson.model.AbstractProject: freestyle, matrix and matrix configurations. */
abstract class AbstractProject extends Job implements Queue.Task {
    String _assignedLabel

    Label getAssignedLabel() { Label.get(_assignedLabel) }

    String getAssignedLabelString() { _assignedLabel }

    /** Jenkins: the Node of the last build, null when that node is gone. */
    Node getLastBuiltOn() {
        def b = getLastBuild()
        b == null ? null : jenkins.model.Jenkins.get().getNode(((AbstractBuild) b).builtOnStr)
    }

    Queue.Task getOwnerTask() { this }
}
