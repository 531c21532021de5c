package hudson.model

class StringParameterValue extends ParameterValue {
    final String value

    StringParameterValue(String name, String value) { super(name); this.value = value }

    Object getValue() { value }

    @Override String toString() { "(StringParameterValue) " + name + "='" + value + "'" }

    @Override String getShortDescription() { name + '=' + value }
}
