package org.jenkinsci.plugins.workflow.support.actions

import org.jenkinsci.plugins.workflow.actions.WorkspaceAction

class WorkspaceActionImpl extends WorkspaceAction {
    private final String node
    private final String path

    WorkspaceActionImpl(String node, String path) { this.node = node; this.path = path }

    String getNode() { node }

    String getPath() { path }
}
