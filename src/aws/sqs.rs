//! The `jenkins-requests` queue: receive a batch, delete each message once
//! handled. Every failure is returned, never fatal.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use aws_sdk_sqs::Client;

use super::describe_error;
use crate::world::BoxFuture;

/// A failed call to the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqsError {
    #[error("GetQueueUrl {queue} of {owner}: {message}")]
    QueueUrl { queue: String, owner: String, message: String },
    #[error("GetQueueUrl {queue}: no URL in the answer")]
    NoUrl { queue: String },
    #[error("ReceiveMessage: {0}")]
    Receive(String),
    #[error("DeleteMessage: {0}")]
    Delete(String),
    #[error("ChangeMessageVisibility: {0}")]
    Release(String),
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// Who sent it, as SQS saw it: an IAM user's unique id (`AIDA…`), a
    /// role's with its session (`AROA…:session`), or an account id.
    pub sender: Option<String>,
}

pub async fn queue_url(client: &Client, name: &str, owner: &str) -> Result<String, SqsError> {
    let out = client.get_queue_url().queue_name(name).queue_owner_aws_account_id(owner).send().await.map_err(|e| {
        SqsError::QueueUrl { queue: name.to_string(), owner: owner.to_string(), message: describe_error(&e) }
    })?;
    out.queue_url().map(str::to_string).ok_or_else(|| SqsError::NoUrl { queue: name.to_string() })
}

/// Up to `max` messages (at most 10, SQS's own limit), each with its
/// `SenderId` system attribute; when none is there, SQS holds the call up to
/// `wait` (whole seconds, at most 20) until one comes. What it receives is
/// hidden from other reads for `visibility` (whole seconds, at most SQS's 12
/// hours), or for the queue's own visibility timeout when `None`.
pub async fn receive(
    client: &Client,
    url: &str,
    max: i32,
    wait: Duration,
    visibility: Option<Duration>,
) -> Result<Vec<Message>, SqsError> {
    let wait = Duration::from_secs(wait.as_secs().min(20));
    let seconds = i32::try_from(wait.as_secs()).unwrap_or(20);
    let visibility = visibility.map(|v| i32::try_from(v.as_secs().min(12 * 3600)).unwrap_or(12 * 3600));
    let mut call = client
        .receive_message()
        .queue_url(url)
        .message_system_attribute_names(MessageSystemAttributeName::SenderId)
        .max_number_of_messages(max.clamp(1, 10))
        .wait_time_seconds(seconds)
        .set_visibility_timeout(visibility)
        .customize();
    if !wait.is_zero() {
        call = call.config_override(long_poll_timeouts(client, wait));
    }
    let out = call.send().await.map_err(|e| SqsError::Receive(describe_error(&e)))?;
    Ok(out
        .messages()
        .iter()
        .filter_map(|m| {
            Some(Message {
                id: m.message_id()?.to_string(),
                receipt: m.receipt_handle()?.to_string(),
                body: m.body().unwrap_or_default().to_string(),
                sender: m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::SenderId)).cloned(),
            })
        })
        .collect())
}

/// A long poll's own timeouts: SQS holds the answer for the whole wait, and
/// the client's attempt timeout (`--aws_timeout`/3) would cut a long wait
/// short, or leave no room for what an attempt also covers (refreshing the
/// assumed role, the 5 s connect timeout, TLS). The wait plus 10 s bounds
/// each attempt, and the whole call unless the client's own bound is longer;
/// the connect timeout stays the client's.
fn long_poll_timeouts(client: &Client, wait: Duration) -> aws_sdk_sqs::config::Builder {
    let bound = wait + Duration::from_secs(10);
    let base = client
        .config()
        .timeout_config()
        .cloned()
        .unwrap_or_else(|| aws_smithy_types::timeout::TimeoutConfig::builder().build());
    let whole = base.operation_timeout().map_or(bound, |t| t.max(bound));
    let timeouts = base.to_builder().operation_attempt_timeout(bound).operation_timeout(whole).build();
    aws_sdk_sqs::config::Builder::default().timeout_config(timeouts)
}

pub async fn delete(client: &Client, url: &str, receipt: &str) -> Result<(), SqsError> {
    client
        .delete_message()
        .queue_url(url)
        .receipt_handle(receipt)
        .send()
        .await
        .map_err(|e| SqsError::Delete(describe_error(&e)))?;
    Ok(())
}

/// Visibility timeout 0: the message is on the queue again for the next reader.
pub async fn release(client: &Client, url: &str, receipt: &str) -> Result<(), SqsError> {
    client
        .change_message_visibility()
        .queue_url(url)
        .receipt_handle(receipt)
        .visibility_timeout(0)
        .send()
        .await
        .map_err(|e| SqsError::Release(describe_error(&e)))?;
    Ok(())
}

impl crate::world::Queue for Client {
    fn queue_url<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, Result<String, SqsError>> {
        Box::pin(queue_url(self, name, owner))
    }

    fn receive<'a>(
        &'a self,
        url: &'a str,
        max: i32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<Message>, SqsError>> {
        Box::pin(receive(self, url, max, wait, visibility))
    }

    fn delete<'a>(&'a self, url: &'a str, receipt: &'a str) -> BoxFuture<'a, Result<(), SqsError>> {
        Box::pin(delete(self, url, receipt))
    }

    fn release<'a>(&'a self, url: &'a str, receipt: &'a str) -> BoxFuture<'a, Result<(), SqsError>> {
        Box::pin(release(self, url, receipt))
    }
}
