//! Thin AWS clients. The SDK's standard chain gives the base credentials (so
//! `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, profiles and instance roles all
//! work, and moto's server can stand in for AWS); each env is reached through
//! its assumed role, whose credentials the SDK refreshes before they expire.

pub mod ec2;
pub mod limiter;
pub mod security_group;
pub mod sqs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::EnvConfig;

/// The session name the original used, kept so CloudTrail reads the same.
pub const SESSION_NAME: &str = "slave-manager-script";

/// The base configuration: standard credential chain, bounded retries with
/// backoff, and timeouts on every call so a hung endpoint cannot stall a pass.
///
/// Standard, not adaptive, retries (issue 11). In aws-smithy-runtime 1.16
/// the adaptive mode's client rate limiter, once a call is throttled, holds
/// at most max(rate, 1) token refilled at 0.5 a second, while a retry after
/// a throttle asks it for 10 (`RETRY_TIMEOUT_COST`): every throttled retry
/// then waits the 20 s maximum backoff, past any short `--aws_timeout` (a
/// describe throttled twice never finished). Its fix, Retry Behavior 2.1
/// (one token per attempt), is still a preview (`AWS_NEW_RETRIES_2026`, a
/// `#[doc(hidden)]` `RetrySpec`). Bursts stay within
/// EC2's buckets by batching instead (a burst of one label is one launch per
/// subnet, see `plan::calls`), at most `--max_parallel_calls` calls per env,
/// and a burst that still meets an empty bucket slows down: [`limiter`] is
/// the adaptive mode's equivalent, a rate limiter per account and region
/// that halves its rate once per throttled burst, grows it again with time
/// while EC2 answers, and retries throttled calls itself after a backoff,
/// all within the call's `--aws_timeout` (`--no_rate_limiter`: the standard
/// retries alone). A
/// throttle left after 4 attempts fails that call only, and the next pass
/// plans its items again.
pub async fn base_config(fallback_region: &str, timeout: Duration) -> SdkConfig {
    // The base region only serves STS; IMDS is not asked (it is slow and noisy
    // off EC2), the master's region stands in when the environment names none.
    let region = RegionProviderChain::first_try(aws_config::environment::EnvironmentVariableRegionProvider::new())
        .or_else(Region::new(fallback_region.to_string()));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(timeout / 3)
                .operation_timeout(timeout)
                .build(),
        )
        .load()
        .await
}

/// `arn:aws:iam::<account>:role/<jenkins-master-sg-name>` (SPEC A3).
pub fn role_arn(env: &EnvConfig, role_name: &str) -> String {
    format!("arn:aws:iam::{}:role/{role_name}", env.account_id)
}

/// The configuration of one env: its region, and credentials of the role
/// assumed in its account (cached, refreshed ahead of expiry by the SDK).
pub async fn env_config(base: &SdkConfig, env: &EnvConfig, role_name: &str) -> SdkConfig {
    let region = Region::new(env.region.clone());
    let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn(env, role_name))
        .session_name(SESSION_NAME)
        .region(region.clone())
        .configure(base)
        .build()
        .await;
    base.to_builder()
        .region(region)
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
        .build()
}

/// An SDK error on one line: the service's code and message when it
/// answered, else the whole chain (timeouts, connection errors).
pub fn describe_error<E>(e: &E) -> String
where
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_ec2::error::DisplayErrorContext(e).to_string().replace('\n', " "),
    }
}

/// Counts the HTTP requests (attempts, retries included) the EC2 clients
/// send, so each pass can report what it cost; AWS bills and throttles by
/// request. Also counts the answers that were throttled
/// (`RequestLimitExceeded`), which the rate limiter slows down for.
#[derive(Debug, Default, Clone)]
pub struct CallCounter {
    calls: Arc<AtomicU64>,
    throttled: Arc<AtomicU64>,
}

impl CallCounter {
    pub fn get(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Counts `n` more requests (the fake cloud counts its own calls).
    pub fn add(&self, n: u64) {
        self.calls.fetch_add(n, Ordering::Relaxed);
    }

    /// The throttled answers so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Counts one more throttled answer (the fake cloud counts its own).
    pub fn add_throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }
}

/// EC2's answer when a token bucket is empty.
fn is_throttled_answer(body: &[u8]) -> bool {
    const CODE: &[u8] = b"<Code>RequestLimitExceeded</Code>";
    body.windows(CODE.len()).any(|w| w == CODE)
}

impl aws_sdk_ec2::config::Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_ec2::config::RuntimeComponents,
        _cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        self.add(1);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_ec2::config::interceptors::AfterDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_ec2::config::RuntimeComponents,
        _cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        // An error answer's body is read into memory before it is parsed.
        let response = context.response();
        if response.status().is_server_error() && response.body().bytes().is_some_and(is_throttled_answer) {
            self.add_throttled();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_limit_answer_is_a_throttle_and_other_errors_are_not() {
        let answer = |code: &str| {
            format!("<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors></Response>")
        };
        assert!(is_throttled_answer(answer("RequestLimitExceeded").as_bytes()));
        assert!(!is_throttled_answer(answer("InternalError").as_bytes()));
        assert!(!is_throttled_answer(b""));
    }
}
