package hudson.model

class BooleanParameterValue extends ParameterValue {
    final boolean value

    BooleanParameterValue(String name, boolean value) { super(name); this.value = value }

    Object getValue() { value }

    @Override String toString() { "(BooleanParameterValue) " + name + "='" + value + "'" }

    @Override String getShortDescription() { name + '=' + value }
}
