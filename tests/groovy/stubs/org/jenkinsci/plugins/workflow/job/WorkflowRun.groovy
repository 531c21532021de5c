package org.jenkinsci.plugins.workflow.job

import hudson.model.Run
import org.jenkinsci.plugins.workflow.flow.FlowExecution

/** A Pipeline run: no builtOn; where it ran is in its flow graph. */
class WorkflowRun extends Run {
    FlowExecution _execution

    FlowExecution getExecution() { _execution }
}
