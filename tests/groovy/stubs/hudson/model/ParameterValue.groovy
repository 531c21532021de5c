package hudson.model

/** hudson.model.ParameterValue: one parameter of a build. */
abstract class ParameterValue implements Serializable {
    protected final String name

    protected ParameterValue(String name) { this.name = name }

    String getName() { name }

    abstract Object getValue()

    /** Jenkins' default: toString(); the common subclasses print name=value. */
    String getShortDescription() { toString() }
}
