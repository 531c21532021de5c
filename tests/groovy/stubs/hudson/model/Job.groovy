package hudson.model

/** hudson.model.Job: a project; full name through its folders. */
abstract class Job extends Actionable {
    String _name
    ItemGroup _parent
    List<Run> _builds = []   // oldest first
    List<JobProperty> _properties = []

    String getName() { _name }

    ItemGroup getParent() { _parent }

    String getFullName() { _parent?.fullName ? _parent.fullName + '/' + _name : _name }

    String getDisplayName() { _name }

    String getFullDisplayName() { getFullName().replace('/', ' » ') }

    String getUrl() { 'job/' + getFullName().replace('/', '/job/') + '/' }

    Run getLastBuild() { _builds ? _builds[-1] : null }

    List<JobProperty> getAllProperties() { Collections.unmodifiableList(_properties) }

    /** Test helper: appends a build, linking it to the previous one. */
    Run _addBuild(Run r) {
        r._parent = this
        r._previous = getLastBuild()
        r._number = _builds.size() + 1
        _builds << r
        r
    }
}
