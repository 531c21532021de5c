package com.cloudbees.hudson.plugins.folder

import hudson.model.ItemGroup

/** A folder of the cloudbees-folder plugin. */
class Folder implements ItemGroup {
    String _name
    ItemGroup _parent

    String getName() { _name }

    ItemGroup getParent() { _parent }

    String getFullName() { _parent?.fullName ? _parent.fullName + '/' + _name : _name }
}
