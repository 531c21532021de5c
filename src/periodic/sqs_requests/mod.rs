//! SQS build requests (SPEC A10): up to 10 messages from the
//! `jenkins-requests` queue, each checked by [`validate`] (who sent it, what
//! it asks for), run through the CLI, then deleted.

pub mod validate;

use std::path::Path;
use std::time::Duration;

use super::run_cli;
use crate::config::SqsConfig;
use crate::counter::Counter;
use crate::record::stats::Stats;
use crate::world::World;
use validate::{clip, command_words, masked, ECHO_CHARS};

/// Receives up to 10 build requests and handles each: validated, run, then
/// deleted. A request is left in the queue while Jenkins cannot be reached
/// (the command was never sent), so it is built once Jenkins is back rather
/// than lost; the rest of the batch is left with it. A request that ran (or
/// may have) is remembered by its message id until its delete succeeds, so
/// a failed delete brings it back to be deleted, never built twice.
pub async fn run(world: &World, config: &SqsConfig, stats: &mut Stats) {
    let Some(client) = &world.sqs else { return };
    let (name, owner) = (&config.queue, &config.account_id);
    let url = match client.queue_url(name, owner).await {
        Ok(url) => url,
        Err(e) => {
            tracing::error!("sqs: {e}");
            stats.add(Counter::SqsFailed, 1);
            return;
        }
    };
    let messages = match client.receive(&url, 10, Duration::ZERO, None).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("sqs: {e}");
            stats.add(Counter::SqsFailed, 1);
            return;
        }
    };
    let dir = &world.workdir;
    forget_old_runs(dir);
    let mut unreachable: Option<String> = None;
    for msg in messages {
        let ran = dir.join(ran_file(&msg.id));
        if ran.exists() {
            // It ran before; only its delete failed.
            match client.delete(&url, &msg.receipt).await {
                Ok(()) => {
                    tracing::info!("sqs message {}: ran before, deleted now", msg.id);
                    let _ = std::fs::remove_file(&ran);
                }
                Err(e) => {
                    tracing::error!("sqs message {}: ran before, still not deleted: {e}", msg.id);
                    stats.add(Counter::SqsFailed, 1);
                }
            }
            continue;
        }
        let policy = &config.policy;
        let words = policy.admits_sender(msg.sender.as_deref()).and_then(|()| command_words(&msg.body, policy));
        let from = msg.sender.as_deref().map_or_else(|| "an unknown sender".to_string(), |s| clip(s, ECHO_CHARS));
        let words = match words {
            Ok(words) => words,
            Err(refusal) => {
                if let Err(e) = client.delete(&url, &msg.receipt).await {
                    tracing::error!("sqs message {}: not handled, it stays queued: {e}", msg.id);
                    stats.add(Counter::SqsFailed, 1);
                    continue;
                }
                // Bounded twice: each echoed piece, then the whole line.
                tracing::warn!(
                    "sqs message {} from {from}: dropped: {}",
                    msg.id,
                    clip(&refusal.to_string(), 2 * ECHO_CHARS)
                );
                stats.add(Counter::SqsDropped, 1);
                continue;
            }
        };
        // Parameter names only: a value can be a secret.
        let shown = masked(&words);
        if let Some(why) = &unreachable {
            tracing::warn!(
                "sqs message {} from {from}: {shown} left in the queue: Jenkins is unreachable ({why})",
                msg.id
            );
            stats.add(Counter::SqsFailed, 1);
            continue;
        }
        let outcome = run_cli(world, words).await;
        if let Err(e) = &outcome {
            if e.never_sent() {
                let why = clip(&e.to_string(), ECHO_CHARS);
                tracing::warn!(
                    "sqs message {} from {from}: {shown} not sent, left in the queue for a later pass: {why}",
                    msg.id
                );
                stats.add(Counter::SqsFailed, 1);
                unreachable = Some(why);
                continue;
            }
        }
        // Remembered before the delete: should the delete fail, the message
        // comes back and is then deleted, not run again.
        if let Err(e) = crate::files::replace(&ran, b"") {
            tracing::warn!("sqs message {}: cannot remember that it ran ({e})", msg.id);
        }
        match &outcome {
            Ok(_) => {
                tracing::info!("sqs message {} from {from}: ran {shown}", msg.id);
                stats.add(Counter::SqsHandled, 1);
            }
            Err(e) => {
                tracing::warn!(
                    "sqs message {} from {from}: dropped: {shown}: {}",
                    msg.id,
                    clip(&e.to_string(), ECHO_CHARS)
                );
                stats.add(Counter::SqsDropped, 1);
            }
        }
        match client.delete(&url, &msg.receipt).await {
            Ok(()) => {
                let _ = std::fs::remove_file(&ran);
            }
            Err(e) => {
                tracing::error!("sqs message {}: ran, but it is not deleted yet: {e}", msg.id);
                stats.add(Counter::SqsFailed, 1);
            }
        }
    }
}

const RAN_PREFIX: &str = "sqs_ran_";
/// SQS keeps a message 14 days at most: a record older than that has no
/// message left to stand for.
const RAN_KEPT: Duration = Duration::from_secs(14 * 24 * 3600);

/// The file that records that a message ran: `sqs_ran_<message id>` (SQS's
/// ids are UUIDs; any other id is written in hex, so it cannot name a path;
/// SQS caps ids at 100 characters).
fn ran_file(message_id: &str) -> String {
    let plain = !message_id.is_empty()
        && message_id.len() <= 100
        && message_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if plain {
        format!("{RAN_PREFIX}{message_id}")
    } else {
        let hex: String = message_id.bytes().take(100).map(|b| format!("{b:02x}")).collect();
        format!("{RAN_PREFIX}x{hex}")
    }
}

fn forget_old_runs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let old = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if entry.file_name().to_string_lossy().starts_with(RAN_PREFIX) && old.is_some_and(|age| age > RAN_KEPT) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::ec2::Ec2ErrorKind;
    use crate::fake::{self, Setup, Times};
    use crate::jenkins::cli::CliErrorKind;

    fn setup() -> Setup {
        fake::setup_with_master_jobs()
    }

    #[tokio::test]
    async fn sqs_requests_are_validated_deleted_then_run() {
        let s = setup();
        s.cloud.send(r#"{"name": "deploy", "parameters": {"ENV": "qa"}}"#, Some("AIDAEXAMPLE"));
        s.cloud.send(r#"{"name": "deploy", "action": "safe-restart"}"#, None);
        s.cloud.send("not json", None);
        let mut stats = Stats::default();
        let sqs = s.world.config.sqs.clone().unwrap();
        run(&s.world, &sqs, &mut stats).await;
        assert_eq!(s.jenkins.commands(), [vec!["build", "deploy", "-p", "ENV=qa"]]);
        assert_eq!((stats.get(Counter::SqsHandled), stats.get(Counter::SqsDropped)), (1, 2));
        assert_eq!(s.cloud.in_flight(), 0, "every message is deleted, refused ones too");
        assert_eq!(s.cloud.count("DeleteMessage"), 3);
    }

    #[tokio::test]
    async fn an_sqs_request_whose_delete_fails_runs_once_and_is_deleted_when_it_comes_back() {
        let s = setup();
        s.cloud.send(r#"{"name": "deploy"}"#, None);
        s.cloud.fail(None, "DeleteMessage", Times::Once, Ec2ErrorKind::Other);
        let mut stats = Stats::default();
        let sqs = s.world.config.sqs.clone().unwrap();
        run(&s.world, &sqs, &mut stats).await;
        assert_eq!(s.jenkins.count("build"), 1);
        assert_eq!(stats.get(Counter::SqsFailed), 1);
        assert_eq!(s.cloud.in_flight(), 1, "left for its delete");

        s.cloud.visible_again();
        run(&s.world, &sqs, &mut stats).await;
        assert_eq!(s.jenkins.count("build"), 1, "deleted, not built twice");
        assert_eq!(s.cloud.in_flight(), 0);

        s.cloud.fail(None, "ReceiveMessage", Times::Once, Ec2ErrorKind::Other);
        run(&s.world, &sqs, &mut stats).await;
        assert_eq!(stats.get(Counter::SqsFailed), 2);
    }

    #[tokio::test]
    async fn sqs_requests_wait_in_the_queue_while_jenkins_is_unreachable() {
        let s = setup();
        s.cloud.send(r#"{"name": "deploy"}"#, None);
        s.cloud.send(r#"{"name": "release"}"#, None);
        s.jenkins.fail("build", Times::Once, CliErrorKind::Unreachable);
        let mut stats = Stats::default();
        let sqs = s.world.config.sqs.clone().unwrap();
        run(&s.world, &sqs, &mut stats).await;
        assert_eq!(s.jenkins.count("build"), 1, "one try; the second waits with it");
        assert_eq!((stats.get(Counter::SqsFailed), stats.get(Counter::SqsDropped)), (2, 0));
        assert_eq!(s.cloud.count("DeleteMessage"), 0);
        assert_eq!(s.cloud.in_flight(), 2, "both stay queued");

        s.cloud.visible_again();
        run(&s.world, &sqs, &mut stats).await;
        assert_eq!(stats.get(Counter::SqsHandled), 2, "built once Jenkins is back");
        assert_eq!(s.cloud.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_build_request_jenkins_refuses_is_dropped() {
        let s = setup();
        s.cloud.send(r#"{"name": "deploy"}"#, None);
        s.jenkins.fail("build", Times::Once, CliErrorKind::Failed);
        let mut stats = Stats::default();
        let sqs = s.world.config.sqs.clone().unwrap();
        run(&s.world, &sqs, &mut stats).await;
        assert_eq!((stats.get(Counter::SqsHandled), stats.get(Counter::SqsDropped)), (0, 1));
    }
}
