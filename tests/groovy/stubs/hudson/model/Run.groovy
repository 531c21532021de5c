package hudson.model

/** hudson.model.Run: one build of a Job. */
abstract class Run extends Actionable {
    Job _parent
    Run _previous
    int _number

    Job getParent() { _parent }

    int getNumber() { _number }

    Run getPreviousBuild() { _previous }

    String getFullDisplayName() { _parent.fullDisplayName + ' #' + _number }

    String getExternalizableId() { _parent.fullName + '#' + _number }

    /** Jenkins: a RunAction2 learns which run it belongs to. */
    @Override void addAction(Action a) {
        super.addAction(a)
        if (a instanceof jenkins.model.RunAction2) { ((jenkins.model.RunAction2) a).onAttached(this) }
    }
}
