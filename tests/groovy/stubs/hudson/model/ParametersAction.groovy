package hudson.model

/** hudson.model.ParametersAction: the parameters of a queue item or a build. */
class ParametersAction implements Action, Iterable<ParameterValue> {
    private final List<ParameterValue> parameters

    ParametersAction(List<ParameterValue> parameters) { this.parameters = parameters }

    ParametersAction(ParameterValue... parameters) { this.parameters = parameters as List }

    List<ParameterValue> getParameters() { Collections.unmodifiableList(parameters) }

    ParameterValue getParameter(String name) { parameters.find { it.name == name } }

    Iterator<ParameterValue> iterator() { getParameters().iterator() }

    String getDisplayName() { 'Parameters' }
}
