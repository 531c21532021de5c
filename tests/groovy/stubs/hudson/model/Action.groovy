package hudson.model

/** hudson.model.Action: anything attached to an Actionable. */
interface Action {
    String getDisplayName()
}
