package hudson.model

/** Its value never shows: the short description masks it, as Jenkins does. */
class PasswordParameterValue extends ParameterValue {
    final String _secret

    PasswordParameterValue(String name, String secret) { super(name); this._secret = secret }

    Object getValue() { _secret }

    @Override String toString() { "(PasswordParameterValue) " + name + "='********'" }

    @Override String getShortDescription() { name + "=****" }
}
