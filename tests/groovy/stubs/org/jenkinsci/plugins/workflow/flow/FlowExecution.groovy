package org.jenkinsci.plugins.workflow.flow

import org.jenkinsci.plugins.workflow.graph.FlowNode

/** The running (or finished) program of a Pipeline run. */
class FlowExecution {
    List<FlowNode> _heads = []

    List<FlowNode> getCurrentHeads() { Collections.unmodifiableList(_heads) }
}
