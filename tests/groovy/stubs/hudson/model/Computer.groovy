package hudson.model

import hudson.slaves.OfflineCause

/**
 * hudson.model.Computer: the live side of a node. Regular executors are
 * modelled as a list of busy flags, one-off executors (flyweight tasks) as
 * OneOffExecutors; the idle clock and the connect time are in epoch ms.
 */
class Computer {
    Node _node
    /** true = busy */
    List<Boolean> _executors = [false]
    /** Present only while their flyweight task runs, as in Jenkins. */
    List<OneOffExecutor> _oneOffExecutors = []
    boolean _connected = true
    long _connectTime = 0L
    long _idleStart = 0L
    boolean _temporarilyOffline = false
    OfflineCause _offlineCause
    /** Every setTemporarilyOffline call, for the fixtures to assert on. */
    List<List> _offlineCalls = []

    Node getNode() { _node }

    String getName() { _node?.nodeName ?: '' }

    String getDisplayName() { getName() }

    boolean isOffline() { _temporarilyOffline || !_connected }

    boolean isOnline() { !isOffline() }

    boolean isTemporarilyOffline() { _temporarilyOffline }

    OfflineCause getOfflineCause() { _offlineCause }

    String getOfflineCauseReason() { _offlineCause?.toString() ?: '' }

    /** Deprecated in Jenkins 2.4xx in favour of setTemporaryOfflineCause, still there. */
    @Deprecated
    void setTemporarilyOffline(boolean temporarilyOffline, OfflineCause cause) {
        _offlineCalls << [temporarilyOffline, cause]
        _offlineCause = temporarilyOffline ? cause : null
        _temporarilyOffline = temporarilyOffline
    }

    void setTemporaryOfflineCause(OfflineCause cause) { setTemporarilyOffline(cause != null, cause) }

    /** Jenkins: regular executors only; one-off executors are not counted. */
    int countExecutors() { _executors.size() }

    /** Jenkins: countExecutors() - countIdle(), so a busy one-off executor is not counted. */
    int countBusy() { countExecutors() - countIdle() }

    int countIdle() { _executors.count { !it } as int }

    List<Executor> getExecutors() { _executors.collect { new Executor(_busy: it) } }

    List<OneOffExecutor> getOneOffExecutors() { new ArrayList<OneOffExecutor>(_oneOffExecutors) }

    List<Executor> getAllExecutors() { getExecutors() + getOneOffExecutors() }

    /** Jenkins: false while any one-off executor exists, or any regular one is busy. */
    boolean isIdle() { _oneOffExecutors.isEmpty() && countBusy() == 0 }

    /** Jenkins: true when some regular executor is idle. */
    boolean isPartiallyIdle() { countIdle() > 0 }

    long getConnectTime() { _connectTime }

    /**
     * Jenkins: the max over all executors, one-off ones included; a busy
     * executor answers a time in the future (at least now + 15 s).
     */
    long getIdleStartMilliseconds() {
        boolean busy = countBusy() > 0 || _oneOffExecutors.any { it.busy }
        busy ? Math.max(_idleStart, System.currentTimeMillis() + 15000L) : _idleStart
    }
}
