//! A client-side rate limiter per EC2 account and region that learns from
//! throttles (issue 11), in place of the SDK's adaptive retry mode (see
//! [`super::base_config`]). EC2 throttles with a token bucket per account,
//! region and API; ours is one token bucket in front of all of an account
//! and region's calls whose rate halves on a `RequestLimitExceeded` (once
//! per burst: answers to requests sent before the last cut do not cut
//! again) and grows back with time while EC2 answers (AIMD, as the SDK's
//! CUBIC limiter does in spirit). Throttled calls are retried through it,
//! after a short backoff.
//!
//! It stays off until the first throttle: a fleet that is never throttled
//! sends exactly as it did before. Once on, it turns off again when the
//! rate has grown to twice the rate EC2 throttled (at most [`MAX_RATE`]).
//! No wait, retry or answer outlasts the call's budget (`--aws_timeout`),
//! so a pass cannot stall on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::RetryAction;
use aws_smithy_runtime_api::client::retries::classifiers::{RetryClassifierPriority, RetryReason};
use aws_smithy_types::retry::ErrorKind;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ec2::{Ec2Error, Ec2ErrorKind, LaunchSpec};
use crate::model::Instance;
use crate::world::{BoxFuture, Ec2};

/// The slowest rate the limiter falls to, a quarter of EC2's slowest
/// refill (RunInstances, 2 a second): slower would only waste a pass.
const MIN_RATE: f64 = 0.5;
/// The limiter never runs faster than this (EC2's filtered describes
/// refill at 20 a second, CreateTags at 10, its other mutating calls at 5,
/// RunInstances and StartInstances at 2), so a throttle at any speed
/// starts it at half of this at most.
const MAX_RATE: f64 = 10.0;
/// The lowest rate at which the limiter turns off again, RunInstances'
/// refill: below it, the first answer after a cut to the minimum would
/// turn the limiter off while the bucket is still empty.
const MIN_CEILING: f64 = 2.0;
/// What a throttle keeps of the rate.
const DECREASE: f64 = 0.5;
/// What the rate grows by per second of successes (requests per second):
/// by time, not by answer, so a burst of quick answers cannot raise it past
/// the bucket at once.
const INCREASE: f64 = 0.2;

/// The arithmetic, without clocks or locks: `now` comes in.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// Requests per second; `None` while the limiter is off.
    rate: Option<f64>,
    /// The rate at which the limiter turns off again: twice the rate EC2
    /// last throttled, at least [`MIN_CEILING`] and at most [`MAX_RATE`].
    ceiling: f64,
    /// Tokens in the bucket, at most one.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// When the rate last changed.
    changed: Instant,
    /// When a throttle last cut the rate: throttles of requests sent
    /// before it are answers to the same burst and cut nothing more.
    cut: Option<Instant>,
    /// Requests sent since `window`, to learn the rate a throttle cut.
    sent: u32,
    window: Instant,
}

impl Aimd {
    pub fn new(now: Instant) -> Aimd {
        Aimd {
            rate: None,
            ceiling: MAX_RATE,
            tokens: 0.0,
            refilled: now,
            changed: now,
            cut: None,
            sent: 0,
            window: now,
        }
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

    /// EC2 throttled a request sent at `sent`: halve the rate (on the first
    /// throttle, the rate just sent, over a second at least and at most
    /// [`MAX_RATE`]) and empty the bucket — unless the request went out
    /// before the last cut, which already answered its burst.
    pub fn throttled(&mut self, now: Instant, sent: Instant) {
        if self.rate.is_some() && self.cut.is_some_and(|cut| sent < cut) {
            return;
        }
        self.refill(now);
        let elapsed = now.saturating_duration_since(self.window).as_secs_f64().max(1.0);
        let measured = f64::from(self.sent.max(1)) / elapsed;
        let rate = self.rate.unwrap_or(measured).min(MAX_RATE);
        self.ceiling = (2.0 * rate).clamp(MIN_CEILING, MAX_RATE);
        self.rate = Some((rate * DECREASE).max(MIN_RATE));
        self.changed = now;
        self.cut = Some(now);
        self.tokens = 0.0;
    }

    /// EC2 answered: the rate grows with the time since it last changed, up
    /// to where the limiter turns itself off again.
    pub fn succeeded(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            self.refill(now);
            let rate = rate + INCREASE * now.saturating_duration_since(self.changed).as_secs_f64();
            self.rate = (rate < self.ceiling).then_some(rate);
            self.changed = now;
        }
    }
}

/// One limiter, shared by the clients of one EC2 account and region and fed
/// by the answers of each of their calls.
#[derive(Debug, Clone)]
pub struct Limiter {
    aimd: Arc<Mutex<Aimd>>,
    /// Wakes the waiting requests when an answer raised the rate or turned
    /// the limiter off, so none sleeps out a wait set at an older rate.
    woken: Arc<Notify>,
    /// One call's budget (`--aws_timeout`): its waits, retries and answers
    /// end then.
    budget: Duration,
}

impl Limiter {
    pub fn new(budget: Duration) -> Limiter {
        Limiter { aimd: Arc::new(Mutex::new(Aimd::new(Instant::now()))), woken: Arc::new(Notify::new()), budget }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Aimd) -> T) -> T {
        f(&mut self.aimd.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Waits for a token, or until `deadline`: then the request goes anyway
    /// and meets EC2's own answer. Returns when it was let go.
    pub async fn admit(&self, deadline: Instant) -> Instant {
        loop {
            // Listening before asking: a success between the two still wakes.
            let woken = self.woken.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let now = Instant::now();
            let Err(wait) = self.with(|aimd| aimd.acquire(now)) else { return now };
            if now >= deadline {
                self.with(|aimd| aimd.sent(now));
                return now;
            }
            tracing::debug!(wait_ms = wait.as_millis() as u64, "EC2 request held back by the rate limiter");
            tokio::select! {
                _ = tokio::time::sleep(wait.min(deadline - now)) => {}
                _ = woken => {}
            }
        }
    }

    /// EC2 throttled a request let go at `sent`.
    pub fn throttled(&self, sent: Instant) {
        self.with(|aimd| aimd.throttled(Instant::now(), sent));
    }

    pub fn succeeded(&self) {
        if self.with(|aimd| {
            let was = aimd.rate();
            aimd.succeeded(Instant::now());
            aimd.rate() != was
        }) {
            self.woken.notify_waiters();
        }
    }

    pub fn rate(&self) -> Option<f64> {
        self.with(|aimd| aimd.rate())
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

/// The wait before the retry of a throttled call, doubled each attempt, so
/// a retry never goes straight back into an empty bucket even when the
/// limiter has a token at once.
const BACKOFF: Duration = Duration::from_millis(200);

/// An env's EC2, each call (and each retry after a throttle) admitted by
/// the limiter first, all within the call's budget: the limiter holds a
/// call for half of it at most, so the answer has the other half.
pub struct Paced {
    pub inner: Arc<dyn Ec2>,
    pub limiter: Limiter,
}

/// The answers the SDK leaves to [`Paced`] to retry (see the classifier).
fn is_ec2_throttle(e: &Ec2Error) -> bool {
    e.code.as_deref() == Some("RequestLimitExceeded")
}

impl Paced {
    async fn call<'a, T>(
        &'a self,
        operation: &'static str,
        f: impl Fn() -> BoxFuture<'a, Result<T, Ec2Error>>,
    ) -> Result<T, Ec2Error> {
        let budget = self.limiter.budget;
        let paced = async {
            let admit_by = Instant::now() + budget / 2;
            let mut attempt = 1;
            loop {
                let sent = self.limiter.admit(admit_by).await;
                match f().await {
                    Ok(answer) => {
                        self.limiter.succeeded();
                        return Ok(answer);
                    }
                    Err(e) if is_ec2_throttle(&e) => {
                        self.limiter.throttled(sent);
                        if attempt >= ATTEMPTS || Instant::now() >= admit_by {
                            return Err(e);
                        }
                        // Repeating is safe: a launch repeats its idempotency token.
                        tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        // The SDK's operation timeout starts afresh at each attempt sent
        // from here: this bounds the call as a whole.
        tokio::time::timeout(budget, paced).await.unwrap_or_else(|_| {
            Err(Ec2Error {
                operation,
                kind: Ec2ErrorKind::Other,
                code: None,
                message: format!("no answer within --aws_timeout ({} s)", budget.as_secs()),
            })
        })
    }
}

impl Ec2 for Paced {
    fn describe_agents<'a>(&'a self, slave_name: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, Ec2Error>> {
        Box::pin(self.call("DescribeInstances", move || self.inner.describe_agents(slave_name)))
    }

    fn run_instances<'a>(&'a self, spec: &'a LaunchSpec, count: i32) -> BoxFuture<'a, Result<Vec<String>, Ec2Error>> {
        Box::pin(self.call("RunInstances", move || self.inner.run_instances(spec, count)))
    }

    fn start<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call("StartInstances", move || self.inner.start(ids)))
    }

    fn stop<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call("StopInstances", move || self.inner.stop(ids)))
    }

    fn terminate<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call("TerminateInstances", move || self.inner.terminate(ids)))
    }

    fn set_delete_on_termination<'a>(
        &'a self,
        id: &'a str,
        devices: &'a [String],
    ) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call("ModifyInstanceAttribute", move || self.inner.set_delete_on_termination(id, devices)))
    }

    fn tag<'a>(&'a self, id: &'a str, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(self.call("CreateTags", move || self.inner.tag(id, key, value)))
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
        aimd.throttled(Instant::now(), Instant::now());
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
            // Each throttle answers a request sent after the last cut.
            tokio::time::advance(Duration::from_secs(2)).await;
            aimd.sent(Instant::now());
            aimd.throttled(Instant::now(), Instant::now());
        }
        assert_eq!(aimd.rate(), Some(MIN_RATE));
    }

    #[tokio::test(start_paused = true)]
    async fn successes_raise_the_rate_with_time_until_the_limiter_turns_off() {
        let mut aimd = Aimd::new(Instant::now());
        aimd.acquire(Instant::now()).unwrap();
        aimd.throttled(Instant::now(), Instant::now());
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
        limiter.throttled(Instant::now());
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
        limiter.throttled(Instant::now());
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
        limiter.throttled(Instant::now());
        assert_eq!(waiting.await.unwrap(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_waits_past_its_deadline_however_many_queue() {
        let limiter = Limiter::new(Duration::from_secs(60));
        limiter.admit(Instant::now()).await;
        limiter.throttled(Instant::now());
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

    #[tokio::test(start_paused = true)]
    async fn throttles_answering_one_burst_cut_the_rate_once() {
        let mut aimd = Aimd::new(Instant::now());
        let burst = Instant::now();
        for _ in 0..4 {
            aimd.acquire(burst).unwrap();
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        // All four throttled: four a second sent, halved once.
        for _ in 0..4 {
            aimd.throttled(Instant::now(), burst);
        }
        assert_eq!(aimd.rate(), Some(2.0));
        // A request sent after that cut and throttled cuts again.
        tokio::time::advance(Duration::from_millis(500)).await;
        let later = Instant::now();
        aimd.acquire(later).unwrap();
        aimd.throttled(Instant::now(), later);
        assert_eq!(aimd.rate(), Some(1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_at_any_speed_starts_at_half_the_maximum_and_stays_on_after_a_success() {
        let mut aimd = Aimd::new(Instant::now());
        for _ in 0..100 {
            aimd.acquire(Instant::now()).unwrap();
        }
        aimd.throttled(Instant::now(), Instant::now());
        assert_eq!(aimd.rate(), Some(MAX_RATE * DECREASE));
        tokio::time::advance(Duration::from_millis(200)).await;
        aimd.succeeded(Instant::now());
        assert!(aimd.rate().is_some(), "a success right after a throttle leaves the limiter on");
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_turns_off_at_twice_the_rate_ec2_throttled() {
        let mut aimd = Aimd::new(Instant::now());
        for _ in 0..2 {
            aimd.acquire(Instant::now()).unwrap();
        }
        aimd.throttled(Instant::now(), Instant::now());
        assert_eq!(aimd.rate(), Some(1.0));
        // 1 + 0.2 a second: 3.8 after 14 s, 4 (twice 2) a second later.
        tokio::time::advance(Duration::from_secs(14)).await;
        aimd.succeeded(Instant::now());
        assert!(aimd.rate().is_some_and(|r| (r - 3.8).abs() < 1e-9), "{:?}", aimd.rate());
        tokio::time::advance(Duration::from_secs(1)).await;
        aimd.succeeded(Instant::now());
        assert_eq!(aimd.rate(), None);
    }

    /// An EC2 whose RunInstances answers from a script after a delay, and
    /// notes when each request went out.
    struct Scripted {
        answers: Mutex<Vec<Result<Vec<String>, Ec2Error>>>,
        delay: Duration,
        sent: Mutex<Vec<Instant>>,
    }

    fn throttle() -> Ec2Error {
        Ec2Error {
            operation: "RunInstances",
            kind: Ec2ErrorKind::Throttled,
            code: Some("RequestLimitExceeded".into()),
            message: "Request limit exceeded.".into(),
        }
    }

    impl Ec2 for Scripted {
        fn describe_agents<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, Ec2Error>> {
            unreachable!("only launches are scripted")
        }
        fn run_instances<'a>(&'a self, _: &'a LaunchSpec, _: i32) -> BoxFuture<'a, Result<Vec<String>, Ec2Error>> {
            Box::pin(async move {
                self.sent.lock().unwrap().push(Instant::now());
                tokio::time::sleep(self.delay).await;
                self.answers.lock().unwrap().remove(0)
            })
        }
        fn start<'a>(&'a self, _: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
            unreachable!("only launches are scripted")
        }
        fn stop<'a>(&'a self, _: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
            unreachable!("only launches are scripted")
        }
        fn terminate<'a>(&'a self, _: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
            unreachable!("only launches are scripted")
        }
        fn set_delete_on_termination<'a>(&'a self, _: &'a str, _: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
            unreachable!("only launches are scripted")
        }
        fn tag<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), Ec2Error>> {
            unreachable!("only launches are scripted")
        }
    }

    fn paced(answers: Vec<Result<Vec<String>, Ec2Error>>, delay: Duration, budget: Duration) -> (Paced, Arc<Scripted>) {
        let scripted = Arc::new(Scripted { answers: Mutex::new(answers), delay, sent: Mutex::new(Vec::new()) });
        (Paced { inner: scripted.clone(), limiter: Limiter::new(budget) }, scripted)
    }

    fn spec() -> LaunchSpec {
        LaunchSpec {
            ami: "ami-1".into(),
            instance_type: "t3.large".into(),
            subnet: "subnet-1".into(),
            security_group: "sg-1".into(),
            instance_profile_arn: String::new(),
            key_name: "key".into(),
            spot_price: None,
            tags: Vec::new(),
            client_token: "token".into(),
            root_volume_gb: 8,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_call_is_retried_after_a_backoff_and_its_answer_teaches_the_limiter() {
        let answers = vec![Err(throttle()), Err(throttle()), Ok(vec!["i-1".to_string()])];
        let (ec2, scripted) = paced(answers, Duration::ZERO, Duration::from_secs(60));
        let got = ec2.run_instances(&spec(), 1).await;
        assert_eq!(got.unwrap(), ["i-1"]);
        let sent = scripted.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 3);
        // Never straight back: 200 ms, then 400 ms at least (the limiter at
        // its minimum rate spaces them further).
        assert!(sent[1] - sent[0] >= BACKOFF, "{:?}", sent[1] - sent[0]);
        assert!(sent[2] - sent[1] >= BACKOFF * 2, "{:?}", sent[2] - sent[1]);
        assert!(ec2.limiter.rate().is_some(), "the throttles turned the limiter on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_held_by_the_limiter_and_answered_slowly_still_ends_within_its_budget() {
        let budget = Duration::from_secs(6);
        let (ec2, scripted) = paced(vec![Ok(vec!["i-1".to_string()])], Duration::from_secs(5), budget);
        // The limiter at its slowest rate, its bucket empty, a queue ahead.
        ec2.limiter.admit(Instant::now()).await;
        ec2.limiter.throttled(Instant::now());
        for _ in 0..3 {
            ec2.limiter.admit(Instant::now() + Duration::from_secs(60)).await;
        }
        let start = Instant::now();
        let got = ec2.run_instances(&spec(), 1).await;
        assert_eq!(start.elapsed(), budget, "the call's whole budget, never more");
        let e = got.unwrap_err();
        assert_eq!((e.operation, e.code), ("RunInstances", None), "no answer: {}", e.message);
        // Held for half the budget at most, so the request did go out.
        let sent = scripted.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(sent[0] - start <= budget / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_goes_as_soon_as_an_answer_turns_the_limiter_off() {
        let limiter = Limiter::new(Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(60);
        limiter.admit(deadline).await;
        limiter.throttled(Instant::now());
        assert_eq!(limiter.rate(), Some(MIN_RATE));
        // Ten quiet seconds refill the one token; the next request takes it
        // and the one after it would wait two seconds at 0.5 a second.
        tokio::time::sleep(Duration::from_secs(10)).await;
        limiter.admit(deadline).await;
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                let start = Instant::now();
                limiter.admit(deadline).await;
                start.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The first request's answer: 0.5 + 0.2 × 10.3 is past the ceiling.
        limiter.succeeded();
        assert_eq!(limiter.rate(), None);
        assert_eq!(waiting.await.unwrap(), Duration::from_millis(300));
    }
}
