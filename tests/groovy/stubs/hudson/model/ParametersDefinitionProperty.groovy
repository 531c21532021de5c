package hudson.model

/** hudson.model.ParametersDefinitionProperty: the parameters a job defines (names only here). */
class ParametersDefinitionProperty extends JobProperty {
    final List<String> _names

    ParametersDefinitionProperty(List<String> names) { _names = names }

    List<String> getParameterDefinitionNames() { new ArrayList<String>(_names) }
}
