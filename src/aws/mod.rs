//! Thin AWS clients. The SDK's standard chain gives the base credentials (so
//! `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, profiles and instance roles all
//! work, and moto's server can stand in for AWS); each env is reached through
//! its assumed role, whose credentials the SDK refreshes before they expire.

pub mod ec2;
pub mod security_group;
pub mod sqs;

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
/// request.
#[derive(Debug, Default, Clone)]
pub struct CallCounter(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl CallCounter {
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts `n` more requests (the fake cloud counts its own calls).
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
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
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
