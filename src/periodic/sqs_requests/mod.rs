//! SQS build requests (SPEC A10): up to 10 messages from the
//! `jenkins-requests` queue, each checked by [`validate`] (who sent it, what
//! it asks for), deleted, then run through the CLI.

pub mod validate;

use super::run_cli;
use crate::config::SqsConfig;
use crate::counter::Counter;
use crate::record::stats::Stats;
use crate::world::World;
use validate::{clip, command_words, masked, ECHO_CHARS};

/// Receives up to 10 build requests and handles each: validated, deleted,
/// then run. Deleting before running means a message whose delete fails is
/// left for the next poll instead of being built twice.
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
    let messages = match client.receive(&url, 10).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("sqs: {e}");
            stats.add(Counter::SqsFailed, 1);
            return;
        }
    };
    for msg in messages {
        let policy = &config.policy;
        let words = policy.admits_sender(msg.sender.as_deref()).and_then(|()| command_words(&msg.body, policy));
        let from = msg.sender.as_deref().map_or_else(|| "an unknown sender".to_string(), |s| clip(s, ECHO_CHARS));
        if let Err(e) = client.delete(&url, &msg.receipt).await {
            tracing::error!("sqs message {}: not handled, it stays queued: {e}", msg.id);
            stats.add(Counter::SqsFailed, 1);
            continue;
        }
        let words = match words {
            Ok(words) => words,
            Err(refusal) => {
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
        match run_cli(world, words).await {
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
    async fn an_sqs_request_whose_delete_fails_is_not_run() {
        let s = setup();
        s.cloud.send(r#"{"name": "deploy"}"#, None);
        s.cloud.fail(None, "DeleteMessage", Times::Once, Ec2ErrorKind::Other);
        let mut stats = Stats::default();
        let sqs = s.world.config.sqs.clone().unwrap();
        run(&s.world, &sqs, &mut stats).await;
        assert!(s.jenkins.commands().is_empty(), "left for the next poll, not built twice");
        assert_eq!(stats.get(Counter::SqsFailed), 1);
        assert_eq!(s.cloud.in_flight(), 1);

        s.cloud.fail(None, "ReceiveMessage", Times::Once, Ec2ErrorKind::Other);
        run(&s.world, &sqs, &mut stats).await;
        assert_eq!(stats.get(Counter::SqsFailed), 2);
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
