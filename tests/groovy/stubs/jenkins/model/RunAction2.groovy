package jenkins.model

import hudson.model.Action
import hudson.model.Run

/** jenkins.model.RunAction2: told by Run.addAction which run it was attached to. */
interface RunAction2 extends Action {
    void onAttached(Run r)

    void onLoad(Run r)
}
