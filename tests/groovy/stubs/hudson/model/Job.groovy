package hudson.model

import hudson.security.Permission

/** hudson.model.Job: a project; full name through its folders. */
abstract class Job extends Actionable implements Item {
    String _name
    ItemGroup _parent
    List<Run> _builds = []   // oldest first
    List<JobProperty> _properties = []
    /** Whether the caller (the CLI's user) may read it: its ACL, reduced to one flag. */
    boolean _readable = true

    String getName() { _name }

    ItemGroup getParent() { _parent }

    String getFullName() { _parent?.fullName ? _parent.fullName + '/' + _name : _name }

    String getDisplayName() { _name }

    String getFullDisplayName() { getFullName().replace('/', ' » ') }

    String getUrl() { 'job/' + getFullName().replace('/', '/job/') + '/' }

    Run getLastBuild() { _builds ? _builds[-1] : null }

    List<JobProperty> getAllProperties() { Collections.unmodifiableList(_properties) }

    public <T extends JobProperty> T getProperty(Class<T> clazz) { (T) _properties.find { clazz.isInstance(it) } }

    boolean hasPermission(Permission permission) { _readable }

    /** Test helper: appends a build, linking it to the previous one. */
    Run _addBuild(Run r) {
        r._parent = this
        r._previous = getLastBuild()
        r._number = _builds.size() + 1
        _builds << r
        r
    }
}
