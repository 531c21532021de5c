package hudson.matrix

import hudson.model.AbstractBuild

class MatrixBuild extends AbstractBuild {}
