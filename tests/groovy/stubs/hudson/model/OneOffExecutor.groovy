package hudson.model

/**
 * hudson.model.OneOffExecutor: added to a Computer for one flyweight task (a
 * Pipeline run, a matrix parent) and removed when it ends; not counted by
 * Computer.countExecutors/countBusy/countIdle.
 */
class OneOffExecutor extends Executor {}
