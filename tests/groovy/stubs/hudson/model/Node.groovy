package hudson.model

import hudson.model.labels.LabelAtom

/** hudson.model.Node: an agent's configuration. */
abstract class Node {
    String _name = ''
    String _description = ''
    String _labelString = ''
    int _numExecutors = 1
    /** Labels a LabelFinder adds (Node.getDynamicLabels in Jenkins). */
    List<String> _dynamicLabels = []

    String getNodeName() { _name }

    String getDisplayName() { _name }

    String getNodeDescription() { _description }

    String getLabelString() { _labelString }

    int getNumExecutors() { _numExecutors }

    LabelAtom getSelfLabel() { LabelAtom.get(getNodeName()) }

    /** Like Jenkins: the configured labels, the dynamic ones and the self label. */
    Set<LabelAtom> getAssignedLabels() {
        Set<LabelAtom> r = new HashSet<LabelAtom>()
        (getLabelString() ?: '').split(/\s+/).findAll { it }.each { r << LabelAtom.get(it) }
        _dynamicLabels.each { r << LabelAtom.get(it) }
        r << getSelfLabel()
        Collections.unmodifiableSet(r)
    }

    abstract Computer toComputer()
}
