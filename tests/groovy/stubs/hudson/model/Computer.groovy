package hudson.model

import hudson.slaves.OfflineCause

/**
 * hudson.model.Computer: the live side of a node. Executors are modelled as
 * a list of busy flags; the idle clock and the connect time are in epoch ms.
 */
class Computer {
    Node _node
    /** true = busy */
    List<Boolean> _executors = [false]
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

    int countExecutors() { _executors.size() }

    int countBusy() { _executors.count { it } as int }

    int countIdle() { countExecutors() - countBusy() }

    boolean isIdle() { countBusy() == 0 }

    long getConnectTime() { _connectTime }

    /** When the last executor went idle (epoch ms); Jenkins takes the max over executors. */
    long getIdleStartMilliseconds() { _idleStart }
}
