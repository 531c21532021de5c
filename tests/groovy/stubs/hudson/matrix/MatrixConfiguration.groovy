package hudson.matrix

import hudson.model.AbstractProject

/** One axis combination of a matrix project; its name is the combination (label=dev). */
class MatrixConfiguration extends AbstractProject {}
