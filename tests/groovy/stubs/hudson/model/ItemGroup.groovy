package hudson.model

/** hudson.model.ItemGroup: Jenkins itself or a folder. */
interface ItemGroup {
    String getFullName()
}
