package org.jenkinsci.plugins.workflow.graph

import hudson.model.Action
import hudson.model.Actionable

/** One step of a Pipeline's flow graph; parents point backwards in time. */
class FlowNode extends Actionable {
    String _id
    List<FlowNode> _parents = []

    String getId() { _id }

    List<FlowNode> getParents() { Collections.unmodifiableList(_parents) }

    public <T extends Action> T getPersistentAction(Class<T> type) { getAction(type) }

    @Override boolean equals(Object o) { o instanceof FlowNode && ((FlowNode) o)._id == _id }

    @Override int hashCode() { _id.hashCode() }
}
