package hudson.model

import hudson.security.AccessControlled
import hudson.security.Permission

/** hudson.model.Item: a job or folder; readable or not by the caller. */
interface Item extends AccessControlled {
    static final Permission READ = new Permission('hudson.model.Item.Read')

    String getFullName()
}
