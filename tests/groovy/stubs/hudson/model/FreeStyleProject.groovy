package hudson.model

class FreeStyleProject extends AbstractProject {}
