package org.jenkinsci.plugins.workflow.graph

import hudson.model.Action
import hudson.model.Actionable
import org.jenkinsci.plugins.workflow.flow.FlowExecution

/**
 * One step of a Pipeline's flow graph; parents point backwards in time. As in
 * workflow-api, getParents() loads each parent id through the execution, so an
 * element is null where the storage cannot load that node.
 */
class FlowNode extends Actionable {
    FlowExecution _exec
    String _id
    List<String> _parentIds = []

    FlowExecution getExecution() { _exec }

    String getId() { _id }

    List<String> getParentIds() { Collections.unmodifiableList(_parentIds) }

    List<FlowNode> getParents() { Collections.unmodifiableList(_parentIds.collect { _exec.getNode(it) }) }

    public <T extends Action> T getPersistentAction(Class<T> type) { getAction(type) }

    @Override boolean equals(Object o) { o instanceof FlowNode && ((FlowNode) o)._id == _id }

    @Override int hashCode() { _id.hashCode() }
}
