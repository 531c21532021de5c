package org.jenkinsci.plugins.workflow.actions

import hudson.model.Action

/** On the FlowNode of a node block: where its workspace was; node '' = built-in. */
abstract class WorkspaceAction implements Action {
    abstract String getNode()

    abstract String getPath()

    String getDisplayName() { 'Workspace' }
}
