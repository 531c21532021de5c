package jenkins.model

import hudson.model.Computer
import hudson.model.Node

/**
 * jenkins.model.Jenkins: the controller, itself the built-in node. One
 * instance per fixture (Jenkins._reset()).
 */
class Jenkins extends Node {
    private static Jenkins theInstance
    hudson.model.Queue _queue = new hudson.model.Queue()
    List<Computer> _computers = []
    MasterComputer _masterComputer

    static Jenkins get() {
        if (theInstance == null) { throw new IllegalStateException('Jenkins has not been started, or was already shut down') }
        theInstance
    }

    static Jenkins getInstanceOrNull() { theInstance }

    @Deprecated static Jenkins getInstance() { theInstance }

    static Jenkins _reset() {
        theInstance = new Jenkins()
        theInstance._name = ''
        theInstance._description = 'the master Jenkins node'
        theInstance._labelString = 'master_node'
        theInstance._numExecutors = 2
        theInstance._masterComputer = new MasterComputer(_node: theInstance, _executors: [true, false])
        theInstance._computers << theInstance._masterComputer
        theInstance
    }

    hudson.model.Queue getQueue() { _queue }

    Computer[] getComputers() { _computers as Computer[] }

    List<Node> getNodes() { _computers.collect { it.node }.findAll { it != null && !it.is(this) } }

    Node getNode(String name) { getNodes().find { it.nodeName == name } }

    @Override String getNodeName() { '' }

    /** Like Jenkins 2.307+: the built-in node's self label is built-in. */
    @Override hudson.model.labels.LabelAtom getSelfLabel() { hudson.model.labels.LabelAtom.get('built-in') }

    @Override String getDisplayName() { 'Jenkins' }

    Computer toComputer() { _masterComputer }

    /** The built-in node's computer. */
    static class MasterComputer extends Computer {
        @Override String getName() { '' }

        @Override String getDisplayName() { 'Built-In Node' }
    }
}
