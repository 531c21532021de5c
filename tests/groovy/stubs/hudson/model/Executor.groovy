package hudson.model

/** hudson.model.Executor: busy while it holds a work unit or an executable. */
class Executor {
    boolean _busy

    boolean isIdle() { !_busy }

    boolean isBusy() { _busy }
}
