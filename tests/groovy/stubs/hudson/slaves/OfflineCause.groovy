package hudson.slaves

/** hudson.slaves.OfflineCause and the two kinds the fixtures need. */
abstract class OfflineCause {
    final long timestamp = System.currentTimeMillis()

    long getTimestamp() { timestamp }

    /** Jenkins' UserCause: "Disconnected by USER : MESSAGE". */
    static class UserCause extends OfflineCause {
        final String _user
        final String _message

        UserCause(String user, String message) { _user = user; _message = message }

        @Override String toString() { 'Disconnected by ' + _user + (_message ? ' : ' + _message : '') }
    }

    /** Set by the CLI (offline-node) or by a script: the message is public. */
    static class ByCLI extends UserCause {
        final String message

        ByCLI(String message) { super('slave-manager', message); this.message = message }
    }

    /** The agent's channel went away. */
    static class ChannelTermination extends OfflineCause {
        final Exception cause

        ChannelTermination(Exception cause) { this.cause = cause }

        @Override String toString() { 'Connection was broken: ' + cause }
    }
}
