package hudson.model

class FreeStyleBuild extends AbstractBuild {}
