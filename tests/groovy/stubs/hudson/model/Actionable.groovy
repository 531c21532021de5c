package hudson.model

/** hudson.model.Actionable: holds actions. */
abstract class Actionable {
    List<Action> _actions = []

    List<Action> getAllActions() { Collections.unmodifiableList(_actions) }

    List<Action> getActions() { getAllActions() }

    public <T extends Action> List<T> getActions(Class<T> type) {
        _actions.findAll { type.isInstance(it) }.collect { type.cast(it) }
    }

    public <T extends Action> T getAction(Class<T> type) {
        (T) _actions.find { type.isInstance(it) }
    }

    void addAction(Action a) { _actions << a }
}
