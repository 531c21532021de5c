package hudson.model

/** hudson.model.AbstractBuild: records the node name it ran on ('' = built-in). */
abstract class AbstractBuild extends Run {
    String _builtOn

    String getBuiltOnStr() { _builtOn }
}
