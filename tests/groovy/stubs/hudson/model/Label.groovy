package hudson.model

/** hudson.model.Label: a label expression; toString() is its name. */
class Label {
    protected final String name

    Label(String name) { this.name = name }

    String getName() { name }

    String getExpression() { name }

    String getDisplayName() { name }

    boolean isSelfLabel() { false }

    @Override String toString() { name }

    @Override boolean equals(Object o) { o instanceof Label && ((Label) o).name == name }

    @Override int hashCode() { name.hashCode() }

    static Label get(String l) { l?.trim() ? new Label(l.trim()) : null }
}
