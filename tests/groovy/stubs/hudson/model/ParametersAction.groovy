package hudson.model

import java.util.logging.Level
import java.util.logging.Logger
import jenkins.model.RunAction2

/**
 * hudson.model.ParametersAction: the parameters of a queue item or a build.
 * As in Jenkins (SECURITY-170): once attached to a run, getParameters() keeps
 * only the parameters its job defines (or the safe ones) and logs a WARNING
 * for every other one, on every call; getAllParameters() returns them all,
 * silently. On a queue item (no run yet) getParameters() returns them all.
 */
class ParametersAction implements RunAction2, Iterable<ParameterValue> {
    private static final Logger LOGGER = Logger.getLogger(ParametersAction.name)
    private final List<ParameterValue> parameters
    private Set<String> safeParameters = new TreeSet<String>()
    private List<String> parameterDefinitionNames
    private transient Run run

    ParametersAction(List<ParameterValue> parameters) { this.parameters = new ArrayList<ParameterValue>(parameters) }

    ParametersAction(ParameterValue... parameters) { this(parameters as List) }

    List<ParameterValue> getParameters() { Collections.unmodifiableList(filter(parameters)) }

    List<ParameterValue> getAllParameters() { Collections.unmodifiableList(parameters) }

    ParameterValue getParameter(String name) { parameters.find { it != null && it.name == name } }

    Iterator<ParameterValue> iterator() { getParameters().iterator() }

    String getDisplayName() { 'Parameters' }

    void onAttached(Run r) {
        def p = r.parent.getProperty(ParametersDefinitionProperty)
        parameterDefinitionNames = p != null ? p.parameterDefinitionNames : []
        run = r
    }

    void onLoad(Run r) { run = r }

    private List<ParameterValue> filter(List<ParameterValue> parameters) {
        if (run == null || parameterDefinitionNames == null) { return parameters }
        List<ParameterValue> kept = []
        for (ParameterValue v : parameters) {
            if (parameterDefinitionNames.contains(v.name) || safeParameters.contains(v.name)) {
                kept << v
            } else {
                LOGGER.log(Level.WARNING, 'Skipped parameter `{0}` as it is undefined on `{1}` (#{2}).',
                           [v.name, run.parent.fullName, run.number] as Object[])
            }
        }
        kept
    }
}
