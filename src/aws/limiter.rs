//! A client-side rate limiter per EC2 account and region that learns from
//! throttles (issue 11), in place of the SDK's adaptive retry mode (see
//! [`super::base_config`]). EC2 throttles with a token bucket per account,
//! region and API; ours is one token bucket in front of all of an account
//! and region's requests whose rate halves on each `RequestLimitExceeded`
//! and grows back with time while EC2 answers (AIMD, as the SDK's CUBIC
//! limiter does in spirit). Throttled calls are retried through it.
//!
//! It stays off until the first throttle: a fleet that is never throttled
//! sends exactly as it did before. No wait or retry outlasts the call's
//! budget (`--aws_timeout`), so a pass cannot stall on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::RetryAction;
use aws_smithy_runtime_api::client::retries::classifiers::{RetryClassifierPriority, RetryReason};
use aws_smithy_types::retry::ErrorKind;
use tokio::time::Instant;

use super::ec2::{Ec2Error, LaunchSpec};
use crate::model::Instance;
use crate::world::{BoxFuture, Ec2};

/// The slowest rate the limiter falls to, a quarter of EC2's slowest
/// refill (RunInstances, 2 a second): slower would only waste a pass.
const MIN_RATE: f64 = 0.5;
/// Past this the limiter turns itself off (EC2's describe buckets refill at
/// 20 a second, its mutating ones slower).
const MAX_RATE: f64 = 10.0;
/// What a throttle keeps of the rate.
const DECREASE: f64 = 0.5;
/// What the rate grows by per second of successes (requests per second):
/// by time, not by answer, so a burst of quick answers cannot raise it past
/// the bucket at once.
const INCREASE: f64 = 0.2;

/// The arithmetic, without clocks or locks: `now` comes in.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// Requests per second; `None` while no throttle has been seen.
    rate: Option<f64>,
    /// Tokens in the bucket, at most one.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// When the rate last changed.
    changed: Instant,
    /// Requests sent since `window`, to learn the rate a throttle cut.
    sent: u32,
    window: Instant,
}

impl Aimd {
    pub fn new(now: Instant) -> Aimd {
        Aimd { rate: None, tokens: 0.0, refilled: now, changed: now, sent: 0, window: now }
    }

    /// The current rate, if the limiter is on.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            // A bucket of one token: once EC2 has throttled, requests are
            // spaced, never sent together (its smallest buckets hold few).
            self.tokens = (self.tokens + elapsed * rate).min(1.0);
        }
        self.refilled = now;
    }

    /// Takes a token for a request about to be sent at `now`, or says how
    /// long until there is one. Nothing is promised to a waiting request: it
    /// asks again, so a rate cut while it waits spaces it at the new rate.
    pub fn acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(rate) = self.rate {
            self.refill(now);
            if self.tokens < 1.0 {
                return Err(Duration::from_secs_f64((1.0 - self.tokens) / rate));
            }
            self.tokens -= 1.0;
        }
        self.sent(now);
        Ok(())
    }

    /// Notes a request sent at `now` (with a token or past its deadline).
    pub fn sent(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.sent = 0;
        }
        self.sent += 1;
    }

    /// EC2 answered a throttle: halve the rate (on the first throttle, the
    /// rate just sent, over a second at least) and empty the bucket.
    pub fn throttled(&mut self, now: Instant) {
        self.refill(now);
        let elapsed = now.saturating_duration_since(self.window).as_secs_f64().max(1.0);
        let measured = f64::from(self.sent.max(1)) / elapsed;
        let rate = self.rate.unwrap_or(measured);
        self.rate = Some((rate * DECREASE).max(MIN_RATE));
        self.changed = now;
        self.tokens = 0.0;
    }

    /// EC2 answered: the rate grows with the time since it last changed, up
    /// to where the limiter turns itself off again.
    pub fn succeeded(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            self.refill(now);
            let rate = rate + INCREASE * now.saturating_duration_since(self.changed).as_secs_f64();
            self.rate = (rate < MAX_RATE).then_some(rate);
            self.changed = now;
        }
    }
}

/// One limiter, shared by the clients of one EC2 account and region and fed
/// by the answers of each of their requests.
#[derive(Debug, Clone)]
pub struct Limiter {
    aimd: Arc<Mutex<Aimd>>,
    /// One call's budget (`--aws_timeout`): its waits and retries end then.
    budget: Duration,
}

impl Limiter {
    pub fn new(budget: Duration) -> Limiter {
        Limiter { aimd: Arc::new(Mutex::new(Aimd::new(Instant::now()))), budget }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Aimd) -> T) -> T {
        f(&mut self.aimd.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Waits for a token, or until `deadline`: then the request goes anyway
    /// and meets EC2's own answer.
    pub async fn admit(&self, deadline: Instant) {
        loop {
            let now = Instant::now();
            let Err(wait) = self.with(|aimd| aimd.acquire(now)) else { return };
            if now >= deadline {
                self.with(|aimd| aimd.sent(now));
                return;
            }
            tracing::debug!(wait_ms = wait.as_millis() as u64, "EC2 request held back by the rate limiter");
            tokio::time::sleep(wait.min(deadline - now)).await;
        }
    }

    pub fn throttled(&self) {
        self.with(|aimd| aimd.throttled(Instant::now()));
    }

    pub fn succeeded(&self) {
        self.with(|aimd| aimd.succeeded(Instant::now()));
    }

    pub fn rate(&self) -> Option<f64> {
        self.with(|aimd| aimd.rate())
    }
}

impl aws_sdk_ec2::config::Intercept for Limiter {
    fn name(&self) -> &'static str {
        "Limiter"
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_ec2::config::interceptors::AfterDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_ec2::config::RuntimeComponents,
        _cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        let response = context.response();
        if response.status().is_success() {
            self.succeeded();
        } else if response.status().is_server_error() && response.body().bytes().is_some_and(super::is_throttled_answer)
        {
            self.throttled();
        }
        Ok(())
    }
}

/// The SDK does not retry a throttle itself: its retry would go out after a
/// backoff fixed when the throttle came, however the rate falls meanwhile;
/// [`Paced`] retries it through the limiter instead.
impl aws_sdk_ec2::config::retry::ClassifyRetry for Limiter {
    fn classify_retry(&self, _ctx: &InterceptorContext) -> RetryAction {
        RetryAction::NoActionIndicated
    }

    fn classify_retry_v2(&self, ctx: &InterceptorContext, previous: &RetryAction) -> RetryAction {
        // EC2's throttle only: other throttling answers (a 503 `SlowDown`)
        // keep the SDK's retries, and the limiter does not hear them.
        let ec2_throttle = ctx.response().and_then(|r| r.body().bytes()).is_some_and(super::is_throttled_answer);
        match previous {
            RetryAction::RetryIndicated(RetryReason::RetryableError { kind: ErrorKind::ThrottlingError, .. })
                if ec2_throttle =>
            {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn priority(&self) -> RetryClassifierPriority {
        // After the SDK's classifiers, which tell a throttle from an error.
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }

    fn name(&self) -> &'static str {
        "Limiter"
    }
}

/// Attempts of one call at most, as the SDK's standard retries make.
const ATTEMPTS: u32 = 4;

/// An env's EC2, each call (and each retry after a throttle) admitted by
/// the limiter first, all within the call's budget.
pub struct Paced {
    pub inner: Arc<dyn Ec2>,
    pub limiter: Limiter,
}

/// The answers the SDK leaves to [`Paced`] to retry (see the classifier).
fn is_ec2_throttle(e: &Ec2Error) -> bool {
    e.code.as_deref() == Some("RequestLimitExceeded")
}

impl Paced {
    async fn call<'a, T>(&'a self, f: impl Fn() -> BoxFuture<'a, Result<T, Ec2Error>>) -> Result<T, Ec2Error> {
        let deadline = Instant::now() + self.limiter.budget;
        let mut attempt = 1;
        loop {
            self.limiter.admit(deadline).await;
            match f().await {
                // Repeating is safe: a launch repeats its idempotency token.
                Err(e) if is_ec2_throttle(&e) && attempt < ATTEMPTS && Instant::now() < deadline => {
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }
}

impl Ec2 for Paced {
    fn describe_agents<'a>(&'a self, slave_name: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, Ec2Error>> {
        Box::pin(self.call(move || self.inner.describe_agents(slave_name)))
    }

    fn run_instances<'a>(&'a self, spec: &'a LaunchSpec, count: i32) -> BoxFuture<'a, Result<Vec<String>, Ec2Error>> {
        Box::pin(self.call(move || self.inner.run_instances(spec, count)))
    }

    fn start<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call(move || self.inner.start(ids)))
    }

    fn stop<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call(move || self.inner.stop(ids)))
    }

    fn terminate<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call(move || self.inner.terminate(ids)))
    }

    fn set_delete_on_termination<'a>(
        &'a self,
        id: &'a str,
        devices: &'a [String],
    ) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call(move || self.inner.set_delete_on_termination(id, devices)))
    }

    fn tag<'a>(&'a self, id: &'a str, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call(move || self.inner.tag(id, key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_holds_back_a_request_before_the_first_throttle() {
        let mut aimd = Aimd::new(Instant::now());
        for _ in 0..100 {
            assert_eq!(aimd.acquire(Instant::now()), Ok(()));
            aimd.succeeded(Instant::now());
        }
        assert_eq!(aimd.rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_halves_the_rate_just_sent_and_spaces_the_next_requests() {
        let mut aimd = Aimd::new(Instant::now());
        // Eight requests at once, one throttled: the rate sent was 8 a second.
        for _ in 0..8 {
            assert_eq!(aimd.acquire(Instant::now()), Ok(()));
        }
        aimd.throttled(Instant::now());
        assert_eq!(aimd.rate(), Some(4.0));
        assert_eq!(aimd.acquire(Instant::now()), Err(Duration::from_millis(250)));
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(aimd.acquire(Instant::now()), Ok(()));
        assert_eq!(aimd.acquire(Instant::now()), Err(Duration::from_millis(250)));
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_in_a_row_fall_to_the_minimum_rate_and_no_lower() {
        let mut aimd = Aimd::new(Instant::now());
        aimd.acquire(Instant::now()).unwrap();
        for _ in 0..20 {
            aimd.throttled(Instant::now());
        }
        assert_eq!(aimd.rate(), Some(MIN_RATE));
    }

    #[tokio::test(start_paused = true)]
    async fn successes_raise_the_rate_with_time_until_the_limiter_turns_off() {
        let mut aimd = Aimd::new(Instant::now());
        aimd.acquire(Instant::now()).unwrap();
        aimd.throttled(Instant::now());
        assert_eq!(aimd.rate(), Some(MIN_RATE));
        // Many answers at once raise it no more than one.
        for _ in 0..10 {
            aimd.succeeded(Instant::now());
        }
        assert_eq!(aimd.rate(), Some(MIN_RATE));
        tokio::time::advance(Duration::from_secs(5)).await;
        aimd.succeeded(Instant::now());
        assert_eq!(aimd.rate(), Some(MIN_RATE + 5.0 * INCREASE));
        while aimd.rate().is_some() {
            tokio::time::advance(Duration::from_secs(1)).await;
            aimd.succeeded(Instant::now());
        }
        assert_eq!(aimd.acquire(Instant::now()), Ok(()), "off again: nothing held back");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_requests_go_one_at_a_time_at_the_rate() {
        let limiter = Limiter::new(Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..4 {
            limiter.admit(deadline).await;
        }
        limiter.throttled();
        assert_eq!(limiter.rate(), Some(2.0));
        let start = Instant::now();
        for _ in 0..4 {
            limiter.admit(deadline).await;
        }
        // Two a second: four requests after an empty bucket take two seconds.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A quiet spell refills one token only: the requests after it are
        // still spaced.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let start = Instant::now();
        for _ in 0..4 {
            limiter.admit(deadline + Duration::from_secs(60)).await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_cut_while_a_request_waits_spaces_it_at_the_new_rate() {
        let limiter = Limiter::new(Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..4 {
            limiter.admit(deadline).await;
        }
        limiter.throttled();
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                let start = Instant::now();
                limiter.admit(deadline).await;
                start.elapsed()
            }
        });
        tokio::task::yield_now().await;
        // Another answer throttled: 2 a second becomes 1.
        limiter.throttled();
        assert_eq!(waiting.await.unwrap(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_waits_past_its_deadline_however_many_queue() {
        let limiter = Limiter::new(Duration::from_secs(60));
        limiter.admit(Instant::now()).await;
        limiter.throttled();
        assert_eq!(limiter.rate(), Some(MIN_RATE));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(3);
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let limiter = limiter.clone();
            waiting.spawn(async move { limiter.admit(deadline).await });
        }
        waiting.join_all().await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
