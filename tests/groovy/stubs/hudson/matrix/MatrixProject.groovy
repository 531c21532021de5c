package hudson.matrix

import hudson.model.AbstractProject
import hudson.model.ItemGroup
import hudson.model.Queue

/** The matrix-project plugin's parent project: a flyweight task; its configurations are its children. */
class MatrixProject extends AbstractProject implements ItemGroup, Queue.FlyweightTask {}
