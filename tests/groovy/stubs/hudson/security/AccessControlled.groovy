package hudson.security

/** hudson.security.AccessControlled: asked for the caller's (Jenkins.getAuthentication2()) permissions. */
interface AccessControlled {
    boolean hasPermission(Permission permission)
}
