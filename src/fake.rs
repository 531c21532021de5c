//! An in-memory world for unit tests: EC2 per env, the master's security
//! group and the SQS queue ([`FakeCloud`]), and a Jenkins that answers the
//! dump and builds ([`FakeJenkins`]). Each keeps state (instances with their
//! tags, states and volumes; rules; queued messages; the queue and nodes),
//! records every call in order, and can be told to fail a call, once or
//! always, with a given kind of error.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::aws::ec2::{Ec2Error, Ec2ErrorKind, LaunchSpec};
use crate::aws::security_group::SecurityGroupError;
use crate::aws::sqs::{Message, SqsError};
use crate::aws::CallCounter;
use crate::cli::CliTransport;
use crate::config::{
    AwsConfig, Config, EnvConfig, FleetConfig, JenkinsConfig, RunBounds, SecurityGroupConfig, SqsConfig, Subnet,
};
use crate::jenkins::cli::CliErrorKind;
use crate::jenkins::{CliError, CliOutput};
use crate::label::InstanceTypes;
use crate::model::{Instance, InstanceState, Volume, KEY_NAME, MASTER_TAG, WARMED_TAG, WARM_TAG};
use crate::periodic::sqs_requests::validate::Policy;
use crate::plan::security_group::{Held, Rule};
use crate::tls::CertCheck;
use crate::world::{BoxFuture, Clock, Ec2, Jenkins, Queue, SecurityGroups, World};

pub const SLAVE_NAME: &str = "jslave-in-house";
pub const MASTER: &str = "https://jenkins.example.com/";
pub const GC_JOB: &str = "util-slave-manager-garbage-collector";
/// The `env` of calls to the master's security group and to the queue.
pub const MASTER_ENV: &str = "(master)";
pub const SQS_ENV: &str = "(sqs)";

/// One call the world received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The env, or [`MASTER_ENV`] / [`SQS_ENV`].
    pub env: String,
    /// The AWS operation (`RunInstances`, `ReceiveMessage`, …).
    pub op: &'static str,
    /// The instance, rule or message it named; the launch's client token.
    pub target: String,
}

/// How often an injected fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    Once,
    Always,
}

struct Fault {
    op: &'static str,
    env: Option<String>,
    times: Times,
    kind: Ec2ErrorKind,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, Vec<Instance>>,
    rules: Vec<Held>,
    queued: Vec<Message>,
    in_flight: Vec<Message>,
    /// Each env's interruption queue: (queued, in flight).
    events: BTreeMap<String, (Vec<Message>, Vec<Message>)>,
    /// An env's interruption queue's own visibility timeout; without one, a
    /// message received with no timeout of the call's own stays in flight
    /// until deleted or released.
    event_visibility: BTreeMap<String, Duration>,
    /// When a message in flight (its receipt) is on its queue again.
    event_hidden: BTreeMap<String, tokio::time::Instant>,
    calls: Vec<Call>,
    faults: Vec<Fault>,
    launched: u32,
    /// The most instances one RunInstances launches, when capacity is short.
    launch_limit: Option<usize>,
    /// Subnets that refuse launches (spot and on-demand alike, or spot
    /// only), with EC2's error code, as when an AZ runs out of a type.
    short_subnets: BTreeMap<String, (bool, &'static str)>,
    /// Instances whose start is refused, with EC2's error code, as when
    /// their AZ is short of their type or a volume is broken.
    refused_starts: BTreeMap<String, &'static str>,
    /// Each RunInstances: its client token and subnet.
    launches: Vec<(String, String)>,
    /// How long EC2 calls take: per env (`None`: every env) and operation.
    delays: Vec<(Option<String>, &'static str, Duration)>,
    /// EC2 calls under way, and the most seen at once, per env.
    calls_in_flight: BTreeMap<String, usize>,
    max_in_flight: BTreeMap<String, usize>,
}

/// EC2 in every env, the master's security group and the SQS queue.
#[derive(Clone)]
pub struct FakeCloud {
    state: Arc<Mutex<State>>,
    /// Bumped by every EC2 call, as the SDK's interceptor does.
    counter: CallCounter,
    pub clock: Clock,
    /// Wakes the long polls of the interruption queues when an event is sent.
    event_sent: Arc<tokio::sync::Notify>,
}

impl FakeCloud {
    /// An empty cloud on Tokio's clock (paused in the tests that pause it).
    pub fn new() -> FakeCloud {
        FakeCloud {
            state: Arc::default(),
            counter: CallCounter::default(),
            clock: Clock::tokio(),
            event_sent: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, env: &str, instance: Instance) {
        self.state().instances.entry(env.to_string()).or_default().push(instance);
    }

    pub fn instances(&self, env: &str) -> Vec<Instance> {
        self.state().instances.get(env).cloned().unwrap_or_default()
    }

    pub fn instance(&self, env: &str, id: &str) -> Option<Instance> {
        self.instances(env).into_iter().find(|i| i.id == id)
    }

    /// Instances of `env` in an active state (pending, running, stopping, stopped).
    pub fn active(&self, env: &str) -> usize {
        self.instances(env).iter().filter(|i| i.state.is_active()).count()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The operations called, in order, leaving out the describes.
    pub fn mutations(&self) -> Vec<(&'static str, String)> {
        self.calls().into_iter().filter(|c| !c.op.starts_with("Describe")).map(|c| (c.op, c.target)).collect()
    }

    pub fn count(&self, op: &str) -> usize {
        self.state().calls.iter().filter(|c| c.op == op).count()
    }

    /// `op` fails in every env (`env` `None`) or in one, with `kind`.
    pub fn fail(&self, env: Option<&str>, op: &'static str, times: Times, kind: Ec2ErrorKind) {
        self.state().faults.push(Fault { op, env: env.map(str::to_string), times, kind });
    }

    /// `op`'s calls in every env (`env` `None`) or in one take `delay`
    /// before they are answered (on Tokio's clock).
    pub fn delay(&self, env: Option<&str>, op: &'static str, delay: Duration) {
        self.state().delays.push((env.map(str::to_string), op, delay));
    }

    /// Each RunInstances launches at most `limit` of the instances asked
    /// for, as EC2 does when capacity is short.
    pub fn limit_launches(&self, limit: usize) {
        self.state().launch_limit = Some(limit);
    }

    /// RunInstances into `subnet` is refused with InsufficientInstanceCapacity
    /// (spot launches only, when `spot_only`) until [`FakeCloud::has_room`].
    pub fn short_of_room(&self, subnet: &str, spot_only: bool) {
        self.refuse_launches(subnet, spot_only, "InsufficientInstanceCapacity");
    }

    /// RunInstances into `subnet` is refused with EC2's error `code` (spot
    /// launches only, when `spot_only`) until [`FakeCloud::has_room`].
    pub fn refuse_launches(&self, subnet: &str, spot_only: bool, code: &'static str) {
        self.state().short_subnets.insert(subnet.to_string(), (spot_only, code));
    }

    /// StartInstances naming `id` is refused with EC2's error `code` until
    /// [`FakeCloud::allow_start`].
    pub fn refuse_start(&self, id: &str, code: &'static str) {
        self.state().refused_starts.insert(id.to_string(), code);
    }

    pub fn allow_start(&self, id: &str) {
        self.state().refused_starts.remove(id);
    }

    /// The StartInstances calls that named `id`.
    pub fn starts_of(&self, id: &str) -> usize {
        let calls = self.state().calls.clone();
        calls.iter().filter(|c| c.op == "StartInstances" && c.target.split(',').any(|t| t == id)).count()
    }

    /// `subnet` has room again.
    pub fn has_room(&self, subnet: &str) {
        self.state().short_subnets.remove(subnet);
    }

    /// Each RunInstances asked for: its client token and subnet.
    pub fn launches(&self) -> Vec<(String, String)> {
        self.state().launches.clone()
    }

    /// The most EC2 calls `env` had under way at once.
    pub fn max_in_flight(&self, env: &str) -> usize {
        self.state().max_in_flight.get(env).copied().unwrap_or(0)
    }

    /// Counts an EC2 call of `env` as under way, then waits out its delay;
    /// the call ends when the guard goes.
    async fn begin(&self, env: &str, op: &'static str) -> InFlight {
        let delay = {
            let mut state = self.state();
            let now = state.calls_in_flight.entry(env.to_string()).or_default();
            *now += 1;
            let now = *now;
            let max = state.max_in_flight.entry(env.to_string()).or_default();
            *max = (*max).max(now);
            let delay = state.delays.iter().rev().find(|(e, o, _)| *o == op && e.as_deref().is_none_or(|e| e == env));
            delay.map(|(_, _, d)| *d)
        };
        let guard = InFlight { cloud: self.clone(), env: env.to_string() };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        guard
    }

    pub fn rules(&self) -> Vec<Held> {
        self.state().rules.clone()
    }

    pub fn add_rule(&self, held: Held) {
        self.state().rules.push(held);
    }

    /// Puts a message on the queue.
    pub fn send(&self, body: &str, sender: Option<&str>) {
        let mut state = self.state();
        let n = state.queued.len() + state.in_flight.len() + state.calls.len();
        state.queued.push(Message {
            id: format!("m-{n}"),
            receipt: format!("r-{n}"),
            body: body.to_string(),
            sender: sender.map(str::to_string),
        });
    }

    /// Puts an EC2 event (its body) on `env`'s interruption queue.
    pub fn send_event(&self, env: &str, body: &str) {
        let mut state = self.state();
        let n = state.calls.len() + state.events.values().map(|(q, f)| q.len() + f.len()).sum::<usize>();
        let message =
            Message { id: format!("e-{n}"), receipt: format!("er-{n}"), body: body.to_string(), sender: None };
        state.events.entry(env.to_string()).or_default().0.push(message);
        self.event_sent.notify_waiters();
    }

    /// Gives `env`'s interruption queue its own visibility timeout.
    pub fn set_event_visibility(&self, env: &str, timeout: Duration) {
        self.state().event_visibility.insert(env.to_string(), timeout);
    }

    /// Messages of `env`'s interruption queue: (waiting, received and not deleted).
    pub fn events_left(&self, env: &str) -> (usize, usize) {
        self.state().events.get(env).map_or((0, 0), |(q, f)| (q.len(), f.len()))
    }

    /// Messages received and not deleted (SQS would show them again later).
    pub fn in_flight(&self) -> usize {
        self.state().in_flight.len()
    }

    /// The visibility timeout passes: messages received and not deleted are
    /// on the queue again, as SQS redelivers them.
    pub fn visible_again(&self) {
        let mut state = self.state();
        let back: Vec<Message> = state.in_flight.drain(..).collect();
        state.queued.extend(back);
    }

    /// The EC2 client of `env`.
    pub fn ec2(&self, env: &str) -> Arc<dyn Ec2> {
        Arc::new(FakeEc2 { env: env.to_string(), cloud: self.clone() })
    }

    /// Records the call, then fails it if a fault says so.
    fn call(&self, env: &str, op: &'static str, target: &str) -> Result<(), Ec2ErrorKind> {
        let mut state = self.state();
        state.calls.push(Call { env: env.to_string(), op, target: target.to_string() });
        let at = state.faults.iter().position(|f| f.op == op && f.env.as_deref().is_none_or(|e| e == env));
        let Some(at) = at else { return Ok(()) };
        let kind = state.faults[at].kind;
        if state.faults[at].times == Times::Once {
            state.faults.remove(at);
        }
        Err(kind)
    }

    fn ec2_call(&self, env: &str, op: &'static str, target: &str) -> Result<(), Ec2Error> {
        self.counter.add(1);
        self.call(env, op, target).map_err(|kind| {
            if kind == Ec2ErrorKind::Throttled {
                self.counter.add_throttled();
            }
            ec2_error(op, kind)
        })
    }

    /// Changes instances of `env` in one call, or none of them, as EC2
    /// fails a whole call for one unknown id.
    fn with_instances(
        &self,
        env: &str,
        op: &'static str,
        ids: &[String],
        change: impl Fn(&mut Instance),
    ) -> Result<(), Ec2Error> {
        self.ec2_call(env, op, &ids.join(","))?;
        let mut state = self.state();
        let all = state.instances.entry(env.to_string()).or_default();
        let known = |id: &String| all.iter().any(|i| &i.id == id && i.state != InstanceState::Terminated);
        if let Some(bad) = ids.iter().find(|id| !known(id)) {
            return Err(Ec2Error {
                operation: op,
                kind: Ec2ErrorKind::Other,
                code: Some("InvalidInstanceID.NotFound".into()),
                message: format!("InvalidInstanceID.NotFound: {bad}"),
            });
        }
        for instance in all.iter_mut().filter(|i| ids.contains(&i.id)) {
            change(instance);
        }
        Ok(())
    }
}

impl Default for FakeCloud {
    fn default() -> FakeCloud {
        FakeCloud::new()
    }
}

/// The error EC2 answers with for a fault of `kind`.
fn ec2_error(op: &'static str, kind: Ec2ErrorKind) -> Ec2Error {
    let code = match kind {
        Ec2ErrorKind::CapacityShortage => "InsufficientInstanceCapacity",
        Ec2ErrorKind::Throttled => "RequestLimitExceeded",
        Ec2ErrorKind::Other => "InternalError",
    };
    Ec2Error { operation: op, kind, code: Some(code.into()), message: format!("{code}: injected") }
}

/// One EC2 call under way.
struct InFlight {
    cloud: FakeCloud,
    env: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.cloud.state().calls_in_flight.get_mut(&self.env) {
            *n -= 1;
        }
    }
}

struct FakeEc2 {
    env: String,
    cloud: FakeCloud,
}

impl FakeEc2 {
    fn launch(&self, spec: &LaunchSpec, count: usize) -> Result<Vec<String>, Ec2Error> {
        self.cloud.ec2_call(&self.env, "RunInstances", &spec.client_token)?;
        let refused = {
            let mut state = self.cloud.state();
            state.launches.push((spec.client_token.clone(), spec.subnet.clone()));
            state
                .short_subnets
                .get(&spec.subnet)
                .filter(|(spot_only, _)| !spot_only || spec.spot_price.is_some())
                .map(|(_, code)| *code)
        };
        if let Some(code) = refused {
            return Err(Ec2Error {
                operation: "RunInstances",
                kind: Ec2ErrorKind::of(Some(code)),
                code: Some(code.into()),
                message: format!("{code}: injected"),
            });
        }
        let limit = self.cloud.state().launch_limit.unwrap_or(usize::MAX);
        Ok((0..count.min(limit)).map(|_| self.launch_one(spec)).collect())
    }

    fn launch_one(&self, spec: &LaunchSpec) -> String {
        let now = self.cloud.clock.now();
        let mut state = self.cloud.state();
        state.launched += 1;
        let n = state.launched;
        let tag = |key: &str| spec.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let slave_data: Option<Value> = tag("slave_data").and_then(|d| serde_json::from_str(&d).ok());
        let id = format!("i-f{n:04}");
        state.instances.entry(self.env.clone()).or_default().push(Instance {
            id: id.clone(),
            state: InstanceState::Running,
            name: tag("Name"),
            slave_labels: slave_data
                .as_ref()
                .and_then(|d| Some(d.get("slave_labels")?.as_str()?.split_whitespace().map(str::to_string).collect())),
            image_id: spec.ami.clone(),
            instance_type: spec.instance_type.clone(),
            private_ip: Some(format!("10.9.{}.{}", n / 250, n % 250 + 1)),
            public_ip: Some(format!("54.0.{}.{}", n / 250, n % 250 + 1)),
            spot: spec.spot_price.is_some(),
            launched: Some(now),
            volumes: vec![Volume {
                device: "/dev/xvda".into(),
                volume_id: format!("vol-f{n:04}"),
                delete_on_termination: true,
            }],
            master_tag: tag(MASTER_TAG),
            slave_data_master: slave_data.as_ref().and_then(|d| Some(d.get("jenkins_url")?.as_str()?.to_string())),
            key_name: Some(spec.key_name.clone()),
            warm: tag(WARM_TAG),
        });
        id
    }
}

impl Ec2 for FakeEc2 {
    fn describe_agents<'a>(&'a self, slave_name: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, Ec2Error>> {
        Box::pin(async move {
            let _call = self.cloud.begin(&self.env, "DescribeInstances").await;
            self.cloud.ec2_call(&self.env, "DescribeInstances", slave_name)?;
            Ok(self.cloud.instances(&self.env).into_iter().filter(|i| i.name.as_deref() == Some(slave_name)).collect())
        })
    }

    fn run_instances<'a>(&'a self, spec: &'a LaunchSpec, count: i32) -> BoxFuture<'a, Result<Vec<String>, Ec2Error>> {
        Box::pin(async move {
            let _call = self.cloud.begin(&self.env, "RunInstances").await;
            self.launch(spec, usize::try_from(count).unwrap_or(0))
        })
    }

    fn start<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(async move {
            let _call = self.cloud.begin(&self.env, "StartInstances").await;
            let now = self.cloud.clock.now();
            let refused = self.cloud.state().refused_starts.iter().find(|(id, _)| ids.contains(id)).map(|(_, c)| *c);
            if let Some(code) = refused {
                self.cloud.ec2_call(&self.env, "StartInstances", &ids.join(","))?;
                return Err(Ec2Error {
                    operation: "StartInstances",
                    kind: Ec2ErrorKind::of(Some(code)),
                    code: Some(code.into()),
                    message: format!("{code}: injected"),
                });
            }
            self.cloud.with_instances(&self.env, "StartInstances", ids, |i| {
                i.state = InstanceState::Running;
                i.launched = Some(now);
            })
        })
    }

    fn stop<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(async move {
            let _call = self.cloud.begin(&self.env, "StopInstances").await;
            self.cloud.with_instances(&self.env, "StopInstances", ids, |i| i.state = InstanceState::Stopped)
        })
    }

    fn terminate<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(async move {
            let _call = self.cloud.begin(&self.env, "TerminateInstances").await;
            self.cloud.with_instances(&self.env, "TerminateInstances", ids, |i| i.state = InstanceState::Terminated)
        })
    }

    fn set_delete_on_termination<'a>(
        &'a self,
        id: &'a str,
        devices: &'a [String],
    ) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(async move {
            let _call = self.cloud.begin(&self.env, "ModifyInstanceAttribute").await;
            let ids = [id.to_string()];
            self.cloud.with_instances(&self.env, "ModifyInstanceAttribute", &ids, |i| {
                for v in i.volumes.iter_mut().filter(|v| devices.contains(&v.device)) {
                    v.delete_on_termination = true;
                }
            })
        })
    }

    fn tag<'a>(&'a self, id: &'a str, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(async move {
            let _call = self.cloud.begin(&self.env, "CreateTags").await;
            let ids = [id.to_string()];
            self.cloud.with_instances(&self.env, "CreateTags", &ids, |i| match key {
                MASTER_TAG => i.master_tag = Some(value.to_string()),
                "Name" => i.name = Some(value.to_string()),
                WARMED_TAG => i.warm = None,
                _ => {}
            })
        })
    }
}

impl SecurityGroups for FakeCloud {
    fn ipv4_rules<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Vec<Held>, SecurityGroupError>> {
        Box::pin(async move {
            self.counter.add(1);
            self.call(MASTER_ENV, "DescribeSecurityGroups", group_id)
                .map_err(|kind| sg_error("DescribeSecurityGroups", group_id, kind))?;
            Ok(self.rules())
        })
    }

    fn authorize<'a>(&'a self, _group_id: &'a str, rule: &'a Rule) -> BoxFuture<'a, Result<(), SecurityGroupError>> {
        Box::pin(async move {
            self.counter.add(1);
            let op = "AuthorizeSecurityGroupIngress";
            self.call(MASTER_ENV, op, &rule.to_string()).map_err(|kind| sg_error(op, &rule.to_string(), kind))?;
            let mut state = self.state();
            if !state.rules.iter().any(|h| h.rule == *rule) {
                state.rules.push(Held { rule: rule.clone(), ours: true });
            }
            Ok(())
        })
    }

    fn revoke<'a>(&'a self, _group_id: &'a str, rule: &'a Rule) -> BoxFuture<'a, Result<(), SecurityGroupError>> {
        Box::pin(async move {
            self.counter.add(1);
            let op = "RevokeSecurityGroupIngress";
            self.call(MASTER_ENV, op, &rule.to_string()).map_err(|kind| sg_error(op, &rule.to_string(), kind))?;
            self.state().rules.retain(|h| h.rule != *rule);
            Ok(())
        })
    }
}

fn sg_error(operation: &'static str, subject: &str, kind: Ec2ErrorKind) -> SecurityGroupError {
    SecurityGroupError::Call { operation, subject: subject.to_string(), kind, message: "injected".into() }
}

impl Queue for FakeCloud {
    fn queue_url<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, Result<String, SqsError>> {
        Box::pin(async move {
            self.call(SQS_ENV, "GetQueueUrl", name).map_err(|_| SqsError::QueueUrl {
                queue: name.to_string(),
                owner: owner.to_string(),
                message: "injected".into(),
            })?;
            Ok(format!("https://sqs.example/{owner}/{name}"))
        })
    }

    fn receive<'a>(
        &'a self,
        url: &'a str,
        max: i32,
        _wait: Duration,
        _visibility: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<Message>, SqsError>> {
        Box::pin(async move {
            self.call(SQS_ENV, "ReceiveMessage", url).map_err(|_| SqsError::Receive("injected".into()))?;
            let mut state = self.state();
            let n = state.queued.len().min(usize::try_from(max.clamp(1, 10)).unwrap_or(10));
            let batch: Vec<Message> = state.queued.drain(..n).collect();
            state.in_flight.extend(batch.iter().cloned());
            Ok(batch)
        })
    }

    fn delete<'a>(&'a self, _url: &'a str, receipt: &'a str) -> BoxFuture<'a, Result<(), SqsError>> {
        Box::pin(async move {
            self.call(SQS_ENV, "DeleteMessage", receipt).map_err(|_| SqsError::Delete("injected".into()))?;
            self.state().in_flight.retain(|m| m.receipt != receipt);
            Ok(())
        })
    }
    fn release<'a>(&'a self, _url: &'a str, receipt: &'a str) -> BoxFuture<'a, Result<(), SqsError>> {
        Box::pin(async move {
            self.call(SQS_ENV, "ChangeMessageVisibility", receipt).map_err(|_| SqsError::Release("injected".into()))?;
            let mut state = self.state();
            let back: Vec<Message> = state.in_flight.iter().filter(|m| m.receipt == receipt).cloned().collect();
            state.in_flight.retain(|m| m.receipt != receipt);
            state.queued.extend(back);
            Ok(())
        })
    }
}

/// One env's interruption queue: calls are recorded under the env.
struct FakeEventQueue {
    env: String,
    cloud: FakeCloud,
}

impl Queue for FakeEventQueue {
    fn queue_url<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, Result<String, SqsError>> {
        Box::pin(async move {
            self.cloud.call(&self.env, "GetQueueUrl", name).map_err(|_| SqsError::QueueUrl {
                queue: name.to_string(),
                owner: owner.to_string(),
                message: "injected".into(),
            })?;
            Ok(format!("https://sqs.example/{owner}/{name}"))
        })
    }

    fn receive<'a>(
        &'a self,
        url: &'a str,
        max: i32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> BoxFuture<'a, Result<Vec<Message>, SqsError>> {
        Box::pin(async move {
            self.cloud.call(&self.env, "ReceiveMessage", url).map_err(|_| SqsError::Receive("injected".into()))?;
            // A reader that receives on and on would never let the paused
            // clock move: end it with a failed read, not a hung test.
            let receives = self.cloud.calls().iter().filter(|c| c.env == self.env && c.op == "ReceiveMessage").count();
            if receives > 1000 {
                return Err(SqsError::Receive("the fake's bound of 1000 receives: a hot loop".into()));
            }
            // A long poll, as SQS holds it: whole seconds, until a message comes.
            let until = tokio::time::Instant::now() + Duration::from_secs(wait.as_secs());
            loop {
                let sent = self.cloud.event_sent.notified();
                {
                    let now = tokio::time::Instant::now();
                    let mut guard = self.cloud.state();
                    let state = &mut *guard;
                    let (queued, in_flight) = state.events.entry(self.env.clone()).or_default();
                    // Messages whose visibility timeout has passed are on
                    // the queue again, as SQS redelivers them.
                    let hidden = &mut state.event_hidden;
                    let (back, still): (Vec<Message>, Vec<Message>) =
                        in_flight.drain(..).partition(|m| hidden.get(&m.receipt).is_some_and(|&at| at <= now));
                    *in_flight = still;
                    queued.extend(back);
                    if !queued.is_empty() || now >= until {
                        let n = queued.len().min(usize::try_from(max.clamp(1, 10)).unwrap_or(10));
                        let batch: Vec<Message> = queued.drain(..n).collect();
                        in_flight.extend(batch.iter().cloned());
                        let timeout = visibility.or_else(|| state.event_visibility.get(&self.env).copied());
                        for m in &batch {
                            match timeout {
                                Some(t) => hidden.insert(m.receipt.clone(), now + Duration::from_secs(t.as_secs())),
                                None => hidden.remove(&m.receipt),
                            };
                        }
                        return Ok(batch);
                    }
                }
                tokio::select! {
                    _ = sent => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        })
    }

    fn delete<'a>(&'a self, _url: &'a str, receipt: &'a str) -> BoxFuture<'a, Result<(), SqsError>> {
        Box::pin(async move {
            self.cloud.call(&self.env, "DeleteMessage", receipt).map_err(|_| SqsError::Delete("injected".into()))?;
            if let Some((_, in_flight)) = self.cloud.state().events.get_mut(&self.env) {
                in_flight.retain(|m| m.receipt != receipt);
            }
            Ok(())
        })
    }
    fn release<'a>(&'a self, _url: &'a str, receipt: &'a str) -> BoxFuture<'a, Result<(), SqsError>> {
        Box::pin(async move {
            self.cloud
                .call(&self.env, "ChangeMessageVisibility", receipt)
                .map_err(|_| SqsError::Release("injected".into()))?;
            if let Some((queued, in_flight)) = self.cloud.state().events.get_mut(&self.env) {
                queued.extend(in_flight.iter().filter(|m| m.receipt == receipt).cloned());
                in_flight.retain(|m| m.receipt != receipt);
            }
            Ok(())
        })
    }
}

#[derive(Default)]
struct JenkinsState {
    queue: Vec<Value>,
    nodes: Vec<Value>,
    commands: Vec<Vec<String>>,
    faults: Vec<(String, Times, CliErrorKind)>,
}

/// A master whose queue and nodes a test sets; it answers the dump script
/// with them and any `build` with success (the GC job with its line).
#[derive(Default)]
pub struct FakeJenkins(Mutex<JenkinsState>);

impl FakeJenkins {
    fn state(&self) -> MutexGuard<'_, JenkinsState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a build of `job` waiting for `label`.
    pub fn enqueue(&self, job: &str, label: &str) {
        self.state().queue.push(json!({
            "jobName": job, "labels": label, "lastBuiltOn": "UNKNOWN", "throttleEnabled": "false",
            "parameters": "NONE",
        }));
    }

    /// Takes `job`'s items off the queue (they started, or were cancelled).
    pub fn dequeue(&self, job: &str) {
        self.state().queue.retain(|item| item["jobName"] != job);
    }

    /// Adds a node, as the dump script reports one (every value a string).
    pub fn add_node(&self, node: Value) {
        self.state().nodes.push(node);
    }

    /// Sets one field of the named nodes, as a later dump reports them
    /// (`terminate_me` of a node the dump script finds offline by us).
    pub fn set_node_field(&self, name: &str, field: &str, value: &str) {
        for node in self.state().nodes.iter_mut().filter(|n| n["slaveName"] == name) {
            node[field] = value.into();
        }
    }

    /// Every command line received, in order.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.state().commands.clone()
    }

    /// How many commands began with `first`.
    pub fn count(&self, first: &str) -> usize {
        self.state().commands.iter().filter(|c| c.first().is_some_and(|w| w == first)).count()
    }

    /// Commands beginning with `first` fail with `kind`.
    pub fn fail(&self, first: &str, times: Times, kind: CliErrorKind) {
        self.state().faults.push((first.to_string(), times, kind));
    }
}

impl Jenkins for FakeJenkins {
    fn run(&self, words: &[String], _stdin: &[u8]) -> Result<CliOutput, CliError> {
        let mut state = self.state();
        state.commands.push(words.to_vec());
        let command = words.first().cloned().unwrap_or_default();
        if let Some(at) = state.faults.iter().position(|(first, _, _)| *first == command) {
            let (_, times, kind) = state.faults[at].clone();
            if times == Times::Once {
                state.faults.remove(at);
            }
            return Err(match kind {
                // Never reached: the command did not run (a timeout might have).
                CliErrorKind::Unreachable => CliError::Ssh {
                    endpoint: "jenkins:22".into(),
                    reason: "injected: connection refused".into(),
                    sent: false,
                },
                CliErrorKind::Refused => CliError::HostKey { endpoint: "jenkins:22".into(), reason: "injected".into() },
                CliErrorKind::Failed => CliError::Failed { command, status: 1, stderr: "injected".into() },
                CliErrorKind::BadOutput => CliError::TooMuchOutput { command, limit: 1 << 20 },
            });
        }
        if command == "offline-node" {
            // As Jenkins: the named nodes are temporarily offline from now on.
            let names: Vec<String> = words.iter().skip(1).take_while(|w| *w != "-m").cloned().collect();
            for node in state.nodes.iter_mut().filter(|n| names.iter().any(|name| n["slaveName"] == name.as_str())) {
                node["isOffLine"] = "true".into();
            }
        }
        let stdout = match command.as_str() {
            "groovy" => json!({ "build_queue": state.queue, "slave_queue": state.nodes, "messages": [] }).to_string(),
            "build" if words.get(1).is_some_and(|j| j == GC_JOB) => "Garbage collector executed: 0 freed.\n".into(),
            _ => String::new(),
        };
        Ok(CliOutput { status: 0, stdout, stderr: String::new() })
    }
}

/// A configuration with the envs `names`, each with its AMI `ami-<env>`:
/// caps 2 on-demand and 2 spot, 3 passes 5 s apart, the GC job on, no
/// security group, no SQS.
pub fn config(names: &[&str]) -> Config {
    let envs = names
        .iter()
        .map(|name| {
            let env = EnvConfig {
                name: name.to_string(),
                account_id: "111111111111".into(),
                region: "us-east-2".into(),
                vpc_id: "vpc-1".into(),
                agent_sg: "sg-agents".into(),
                instance_profile: "jenkins-cloud".into(),
                subnets: vec![Subnet { id: format!("subnet-{name}"), az: "us-east-2a".into() }],
                jenkins_url: MASTER.into(),
                ami: Some(format!("ami-{name}")),
            };
            (name.to_string(), env)
        })
        .collect();
    Config {
        jenkins: JenkinsConfig {
            url: MASTER.into(),
            user: "slave-manager".into(),
            id_rsa: "id_rsa".into(),
            groovy: "println 'dump'".into(),
            cli: CliTransport::Ssh,
            certificate_check: CertCheck::Verify,
            known_hosts: None,
            cli_jar: None,
            timeout: Duration::from_secs(60),
            output_limit: 1 << 20,
        },
        fleet: FleetConfig {
            envs,
            slave_name: SLAVE_NAME.into(),
            owner_email: "ops@example.com".into(),
            max_on_demand: 2,
            max_spot: 2,
            max_spot_price: "0.2".into(),
            instance_types: InstanceTypes::default(),
            idle_minutes: 45,
            hourly_billing: false,
            zombie_after: None,
            spot_fallback: false,
            warm: vec![],
            spare: vec![],
        },
        aws: AwsConfig {
            role_name: "jenkins_master".into(),
            master_region: "us-west-2".into(),
            timeout: Duration::from_secs(30),
            max_parallel_calls: 4,
            rate_limiter: true,
        },
        security_group: None,
        sqs: None,
        interruption_queue: None,
        gc_job: Some(GC_JOB.into()),
        run: RunBounds {
            loop_counter: 3,
            max_run: Duration::from_secs(30 * 60),
            pass_interval: Duration::from_secs(5),
        },
        debug: false,
        dry_run: false,
        warnings: Vec::new(),
    }
}

/// The master's group `sg-master`, kept to `required`; the SCM host is this
/// machine (no DNS needed).
pub fn security_group(required: &[(u16, &str)]) -> SecurityGroupConfig {
    SecurityGroupConfig {
        group_id: "sg-master".into(),
        scm_host: "localhost".into(),
        required_ip_list: required
            .iter()
            .map(|(port, cidr)| crate::config::IpRule { port: *port, cidr: cidr.to_string(), host_bits: false })
            .collect(),
    }
}

/// The `jenkins-requests` queue of account 123456789012, allowing `build`.
pub fn sqs() -> SqsConfig {
    SqsConfig {
        account_id: "123456789012".into(),
        region: "us-east-2".into(),
        queue: "jenkins-requests".into(),
        policy: Policy::allowing(&["build"]),
    }
}

/// A world of `cloud` and `jenkins` for `config`, working in `workdir`.
pub fn world(config: Config, cloud: &FakeCloud, jenkins: &Arc<FakeJenkins>, workdir: &Path) -> World {
    World {
        ec2: config.fleet.envs.keys().map(|env| (env.clone(), cloud.ec2(env))).collect(),
        master_ec2: Arc::new(cloud.clone()),
        sqs: config.sqs.as_ref().map(|_| Arc::new(cloud.clone()) as Arc<dyn Queue>),
        interruptions: config
            .interruption_queue
            .iter()
            .flat_map(|name| {
                config.fleet.envs.values().map(|env| {
                    let queue = Arc::new(FakeEventQueue { env: env.name.clone(), cloud: cloud.clone() });
                    let visibility = crate::interruption::visibility_timeout(config.run.pass_interval);
                    let queue = crate::interruption::EventQueue::new(queue, name, &env.account_id, visibility);
                    (env.name.clone(), Arc::new(queue))
                })
            })
            .collect(),
        jenkins: Arc::clone(jenkins) as Arc<dyn Jenkins>,
        ec2_calls: cloud.counter.clone(),
        clock: cloud.clock,
        shortages: Default::default(),
        config,
        workdir: workdir.to_path_buf(),
    }
}

/// A fake world and its parts, working in a temporary directory.
pub struct Setup {
    pub cloud: FakeCloud,
    pub jenkins: Arc<FakeJenkins>,
    pub world: World,
    _dir: tempfile::TempDir,
}

/// An empty cloud and Jenkins, and a world of them for `config`.
pub fn setup(config: Config) -> Setup {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temporary directory: {e}"));
    let cloud = FakeCloud::new();
    let jenkins = Arc::new(FakeJenkins::default());
    let world = world(config, &cloud, &jenkins, dir.path());
    Setup { cloud, jenkins, world, _dir: dir }
}

/// One env, with the master's jobs on: a security group that must let
/// 1.2.3.4 reach port 22, and an SQS queue of build requests.
pub fn setup_with_master_jobs() -> Setup {
    let mut config = config(&["dev"]);
    config.security_group = Some(security_group(&[(22, "1.2.3.4/32")]));
    config.sqs = Some(sqs());
    setup(config)
}

/// One of our agents in `env` for `label`, on the env's AMI, launched two
/// hours before `now`; `i-<n>` has the private IP `10.0.0.<n>`.
pub fn agent(env: &str, id: &str, state: InstanceState, label: &str, now: SystemTime) -> Instance {
    let n = id.trim_start_matches("i-");
    Instance {
        id: id.into(),
        state,
        name: Some(SLAVE_NAME.into()),
        slave_labels: Some(vec![label.into()]),
        image_id: format!("ami-{env}"),
        instance_type: "t2.small".into(),
        private_ip: n.parse::<u8>().ok().map(|n| format!("10.0.0.{n}")),
        public_ip: None,
        spot: label.contains("_spot"),
        launched: Some(now - Duration::from_secs(7200)),
        volumes: vec![Volume {
            device: "/dev/xvda".into(),
            volume_id: format!("vol-{n}"),
            delete_on_termination: true,
        }],
        master_tag: Some(MASTER.into()),
        slave_data_master: Some(MASTER.into()),
        key_name: Some(KEY_NAME.into()),
        warm: None,
    }
}

/// A node of `instance` as the dump reports it.
pub fn node(instance: &Instance, env: &str, offline: bool, terminate_me: bool) -> Value {
    let ip = instance.private_ip.clone().unwrap_or_default();
    json!({
        "slaveName": format!("{env}-{ip}"),
        "labels": format!("[{}, swarm]", instance.slave_labels.clone().unwrap_or_default().join(", ")),
        "isOffLine": offline.to_string(),
        "description": format!("Created by Swarm InstanceID={} AmiId={}", instance.id, instance.image_id),
        "ami_id": instance.image_id,
        "ope_idle_count": "1",
        "busy_executors": "0",
        "num_executors": "1",
        "connectTime": "0",
        "idle_seconds": "3000",
        "terminate_me": terminate_me.to_string(),
    })
}
