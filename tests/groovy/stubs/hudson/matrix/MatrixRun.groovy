package hudson.matrix

import hudson.model.AbstractBuild

class MatrixRun extends AbstractBuild {}
