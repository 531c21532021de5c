package org.jenkinsci.plugins.workflow.flow

import org.jenkinsci.plugins.workflow.graph.FlowNode

/**
 * The running (or finished) program of a Pipeline run: its flow nodes by id
 * and the ids of its heads. As in workflow-api/workflow-cps, getNode() answers
 * null for a node its storage cannot load, and a head that cannot be loaded is
 * left out of getCurrentHeads(); a program that failed to load can throw.
 */
class FlowExecution {
    Map<String, FlowNode> _nodes = [:]
    List<String> _heads = []
    /** Thrown by getCurrentHeads() when set: a broken program. */
    RuntimeException _failure

    List<FlowNode> getCurrentHeads() {
        if (_failure != null) { throw _failure }
        _heads.collect { getNode(it) }.findAll { it != null }
    }

    FlowNode getNode(String id) { _nodes[id] }

    /** Test helper: stores a node of this execution. */
    FlowNode _add(FlowNode n) {
        n._exec = this
        _nodes[n._id] = n
        n
    }
}
