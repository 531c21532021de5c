package hudson.model

/** hudson.model.Slave: a permanent or Swarm agent. */
class Slave extends Node {
    Computer _computer

    Computer toComputer() { _computer }
}
