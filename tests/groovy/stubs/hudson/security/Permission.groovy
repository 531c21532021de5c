package hudson.security

/** hudson.security.Permission: only identity matters here. */
class Permission {
    final String id

    Permission(String id) { this.id = id }

    /** Jenkins' generic read, which Item.READ is implied by. */
    static final Permission READ = new Permission('hudson.model.Hudson.GenericRead')

    @Override String toString() { 'Permission[' + id + ']' }
}
