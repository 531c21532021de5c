package hudson.model

/** hudson.model.JobProperty */
abstract class JobProperty<J extends Job> {
}
