package hudson.plugins.throttleconcurrents

import hudson.model.JobProperty

/** The Throttle Concurrent Builds plugin's job property. */
class ThrottleJobProperty extends JobProperty {
    boolean _throttleEnabled

    ThrottleJobProperty(boolean throttleEnabled) { _throttleEnabled = throttleEnabled }

    boolean getThrottleEnabled() { _throttleEnabled }
}
