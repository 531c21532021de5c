package hudson.model

import hudson.security.AccessControlled
import hudson.security.Permission

/**
 * hudson.model.Queue: the build queue. Items are kept in the order they were
 * queued; each kind sits in its own list in Jenkins, and the getters below
 * combine them in Jenkins' order.
 */
class Queue {
    List<Item> _items = []

    /**
     * Jenkins: waiting, blocked, buildable (newest first), pending (newest
     * first) — only items whose task the caller may read: a task that is not
     * AccessControlled is hidden from everyone, SYSTEM included.
     */
    Item[] getItems() {
        List<Item> r = []
        r.addAll(_items.findAll { it instanceof WaitingItem })
        r.addAll(_items.findAll { it instanceof BlockedItem })
        r.addAll(_items.findAll { it instanceof BuildableItem && !it.pending }.reverse())
        r.addAll(_items.findAll { it instanceof BuildableItem && it.pending }.reverse())
        r.findAll { hasReadPermission(it.task) } as Item[]
    }

    /** Jenkins (since 1.402): waiting, buildable, pending; not blocked; no permission check. */
    List<Item> getUnblockedItems() {
        List<Item> r = []
        r.addAll(_items.findAll { it instanceof WaitingItem })
        r.addAll(_items.findAll { it instanceof BuildableItem && !it.pending })
        r.addAll(_items.findAll { it instanceof BuildableItem && it.pending })
        r
    }

    /** Jenkins: buildable then pending, no permission check. */
    List<BuildableItem> getBuildableItems() {
        List<BuildableItem> r = []
        r.addAll(_items.findAll { it instanceof BuildableItem && !it.pending })
        r.addAll(_items.findAll { it instanceof BuildableItem && it.pending })
        r
    }

    Item getItem(long id) { _items.find { it.id == id } }

    private static boolean hasReadPermission(Task t) {
        t instanceof AccessControlled &&
            (((AccessControlled) t).hasPermission(hudson.model.Item.READ) || ((AccessControlled) t).hasPermission(Permission.READ))
    }

    /** A thing that can be queued: a project, a Pipeline node block… */
    static interface Task {
        Label getAssignedLabel()

        String getName()

        String getFullDisplayName()

        String getUrl()

        Node getLastBuiltOn()

        Task getOwnerTask()
    }

    /** A Task that runs on a one-off executor of the controller (a Pipeline run, a matrix parent). */
    static interface FlyweightTask extends Task {}

    abstract static class Item extends Actionable {
        public final long id
        public final Task task
        private final long inQueueSince

        protected Item(Task task, long id, long inQueueSince) {
            this.task = task
            this.id = id
            this.inQueueSince = inQueueSince
        }

        long getId() { id }

        Task getTask() { task }

        long getInQueueSince() { inQueueSince }

        boolean isBlocked() { this instanceof BlockedItem }

        boolean isBuildable() { this instanceof BuildableItem }

        /** Jenkins: a LabelAssignmentAction may override it; else the task's. */
        Label getAssignedLabel() { task.getAssignedLabel() }

        /** Jenkins: '\n' + shortDescription of every parameter. */
        String getParams() {
            StringBuilder s = new StringBuilder()
            for (ParametersAction pa : getActions(ParametersAction)) {
                for (ParameterValue p : pa.getParameters()) {
                    s.append('\n').append(p.getShortDescription())
                }
            }
            s.toString()
        }

        String getWhy() { null }
    }

    static class WaitingItem extends Item {
        WaitingItem(Task task, long id) { super(task, id, System.currentTimeMillis()) }
    }

    abstract static class NotWaitingItem extends Item {
        protected NotWaitingItem(Task task, long id) { super(task, id, System.currentTimeMillis()) }
    }

    static class BlockedItem extends NotWaitingItem {
        BlockedItem(Task task, long id) { super(task, id) }

        @Override String getWhy() { 'Build #1 is already in progress' }
    }

    static class BuildableItem extends NotWaitingItem {
        boolean _pending = false

        BuildableItem(Task task, long id) { super(task, id) }

        boolean isPending() { _pending }

        @Override String getWhy() { 'Waiting for next available executor' }
    }
}
