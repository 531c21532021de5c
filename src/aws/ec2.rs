//! EC2 for one env: one paginated describe of our agents per pass, and the
//! few mutations the act step needs. SDK types stop here; the rest of the
//! program sees `model::Instance`.

use std::time::SystemTime;

use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::operation::run_instances::RunInstancesError;
use aws_sdk_ec2::operation::start_instances::StartInstancesError;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, EbsInstanceBlockDeviceSpecification, Filter, IamInstanceProfileSpecification,
    InstanceBlockDeviceMappingSpecification, InstanceInterruptionBehavior, InstanceMarketOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceStateName, InstanceType, MarketType, ResourceType, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification, VolumeType,
};
use aws_sdk_ec2::Client;

use super::describe_error;
use crate::model::{Instance, InstanceState, Volume, MASTER_TAG, WARMED_TAG, WARM_TAG};
use crate::world::BoxFuture;

/// An EC2 call that failed, with what the loop can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct Ec2Error {
    pub operation: &'static str,
    pub kind: Ec2ErrorKind,
    /// The service's error code (`InsufficientInstanceCapacity`, …), if any.
    pub code: Option<String>,
    pub message: String,
}

/// What an EC2 failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ec2ErrorKind {
    /// EC2 has no room for this launch (typically spot) right now: what
    /// `--spot_fallback` answers with an on-demand launch. A spot price above
    /// our bid is not a shortage: the bid is a ceiling, never paid around.
    CapacityShortage,
    /// The account's request rate is spent (the SDK has retried already):
    /// the next pass tries again.
    Throttled,
    /// Anything else: a refusal, a bad request, a network failure.
    Other,
}

impl Ec2ErrorKind {
    /// The kind of an EC2 error code.
    pub fn of(code: Option<&str>) -> Ec2ErrorKind {
        match code {
            Some("InsufficientInstanceCapacity" | "InsufficientCapacity" | "MaxSpotInstanceCountExceeded") => {
                Ec2ErrorKind::CapacityShortage
            }
            Some("RequestLimitExceeded" | "Throttling" | "ThrottlingException") => Ec2ErrorKind::Throttled,
            _ => Ec2ErrorKind::Other,
        }
    }
}

impl Ec2Error {
    pub(crate) fn new<E, R>(operation: &'static str, e: aws_sdk_ec2::error::SdkError<E, R>) -> Ec2Error
    where
        E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + 'static,
        R: std::fmt::Debug,
    {
        let code = e.as_service_error().and_then(|s| s.code()).map(str::to_string);
        Ec2Error { operation, kind: Ec2ErrorKind::of(code.as_deref()), code, message: describe_error(&e) }
    }

    /// See [`Ec2ErrorKind::CapacityShortage`].
    pub fn is_capacity_shortage(&self) -> bool {
        self.kind == Ec2ErrorKind::CapacityShortage
    }

    /// EC2 has no room for the launch in the subnet asked for (its AZ is out
    /// of the type, the subnet out of addresses, the type not offered in
    /// that AZ): another subnet of the env may well have some.
    pub fn is_short_in_subnet(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "InsufficientInstanceCapacity"
                    | "InsufficientCapacity"
                    | "InsufficientFreeAddressesInSubnet"
                    | "Unsupported"
            )
        )
    }

    /// EC2 refused a call on a list of instances with an answer that may be
    /// about one of them — an unknown id, one in the wrong state, one under
    /// termination protection (`OperationNotPermitted`), one the role's tag
    /// condition denies (`UnauthorizedOperation`), no capacity in one AZ for a
    /// start: the others may well go through one by one. Only a throttle or
    /// a failure of EC2 itself (5xx, no answer) is about the call, and one
    /// call per instance would only make it worse.
    pub fn may_be_about_one_instance(&self) -> bool {
        let Some(code) = self.code.as_deref() else { return false };
        self.kind != Ec2ErrorKind::Throttled
            && !matches!(code, "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable")
    }
}

/// Answers that stay the same however soon the call is repeated: a capacity
/// shortage, and a spot bid under the market price (final, but not a
/// shortage: no on-demand fallback pays around the bid).
fn is_final_for_the_call(code: &str) -> bool {
    Ec2ErrorKind::of(Some(code)) == Ec2ErrorKind::CapacityShortage || code == "SpotMaxPriceTooLow"
}

/// EC2 answers a capacity shortage with a 500, which the SDK retries as
/// transient: four attempts over seconds before `--spot_fallback` can act,
/// and a late success may land the spot agent after all. The answer is
/// final for the call: forbid its retry.
#[derive(Debug)]
pub struct CapacityShortageIsFinal;

impl ClassifyRetry for CapacityShortageIsFinal {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let operation = error.as_operation_error();
        let code = operation
            .and_then(|e| e.downcast_ref::<RunInstancesError>().and_then(|e| e.code()))
            .or_else(|| operation.and_then(|e| e.downcast_ref::<StartInstancesError>()).and_then(|e| e.code()));
        if code.is_some_and(is_final_for_the_call) {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "CapacityShortageIsFinal"
    }
}

/// Everything RunInstances needs for agents of one label.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    pub ami: String,
    pub instance_type: String,
    pub subnet: String,
    pub security_group: String,
    pub instance_profile_arn: String,
    pub key_name: String,
    /// `Some(bid)`: a one-time spot instance.
    pub spot_price: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Idempotency token: a retried call returns the same instances.
    pub client_token: String,
    pub root_volume_gb: i32,
}

/// Our agents in the env (every state), one paginated call. Terminated ones
/// are kept (EC2 lists them for about an hour): a node lingering after its
/// instance was terminated is then told apart from a wrong instance id.
pub async fn describe_agents(client: &Client, slave_name: &str) -> Result<Vec<Instance>, Ec2Error> {
    let mut pages = client
        .describe_instances()
        .filters(Filter::builder().name("tag:Name").values(slave_name).build())
        // A page is parsed whole: smaller pages bound the memory a large
        // fleet needs, at one more call per 500 agents.
        .max_results(500)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Ec2Error::new("DescribeInstances", e))?;
        for reservation in page.reservations() {
            out.extend(reservation.instances().iter().filter_map(to_instance));
        }
    }
    Ok(out)
}

fn to_instance(i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let id = i.instance_id()?.to_string();
    let state = match i.state().and_then(|s| s.name())? {
        InstanceStateName::Pending => InstanceState::Pending,
        InstanceStateName::Running => InstanceState::Running,
        InstanceStateName::Stopping => InstanceState::Stopping,
        InstanceStateName::Stopped => InstanceState::Stopped,
        InstanceStateName::ShuttingDown => InstanceState::ShuttingDown,
        _ => InstanceState::Terminated,
    };
    let tag = |key: &str| i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(str::to_string);
    let slave_data: Option<serde_json::Value> = tag("slave_data").and_then(|data| serde_json::from_str(&data).ok());
    let slave_labels = slave_data
        .as_ref()
        .and_then(|v| Some(v.get("slave_labels")?.as_str()?.split_whitespace().map(str::to_string).collect()));
    let slave_data_master = slave_data.as_ref().and_then(|v| v.get("jenkins_url")?.as_str().map(str::to_string));
    let volumes = i
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            let ebs = m.ebs()?;
            Some(Volume {
                device: m.device_name()?.to_string(),
                volume_id: ebs.volume_id().unwrap_or_default().to_string(),
                delete_on_termination: ebs.delete_on_termination().unwrap_or(false),
            })
        })
        .collect();
    Some(Instance {
        id,
        state,
        name: tag("Name"),
        slave_labels,
        image_id: i.image_id().unwrap_or_default().to_string(),
        instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        private_ip: i.private_ip_address().map(str::to_string),
        public_ip: i.public_ip_address().map(str::to_string),
        spot: i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
        launched: i.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
        volumes,
        master_tag: tag(MASTER_TAG),
        slave_data_master,
        key_name: i.key_name().map(str::to_string),
        warm: tag(WARM_TAG).filter(|_| tag(WARMED_TAG).is_none()),
    })
}

/// Sets one tag on one instance.
pub async fn tag(client: &Client, instance_id: &str, key: &str, value: &str) -> Result<(), Ec2Error> {
    client
        .create_tags()
        .resources(instance_id)
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await
        .map_err(|e| Ec2Error::new("CreateTags", e))?;
    Ok(())
}

/// Launches up to `count` agents in one call (MinCount 1: EC2 may launch
/// fewer when capacity is short), tagged at launch; returns their ids.
pub async fn run_instances(client: &Client, spec: &LaunchSpec, count: i32) -> Result<Vec<String>, Ec2Error> {
    let tags: Vec<Tag> = spec.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    let tag_spec =
        |rt: ResourceType| TagSpecification::builder().resource_type(rt).set_tags(Some(tags.clone())).build();
    let mut req = client
        .run_instances()
        .image_id(&spec.ami)
        .instance_type(InstanceType::from(spec.instance_type.as_str()))
        .min_count(1)
        .max_count(count)
        .key_name(&spec.key_name)
        .client_token(&spec.client_token)
        .iam_instance_profile(IamInstanceProfileSpecification::builder().arn(&spec.instance_profile_arn).build())
        // A public address lets agents in other accounts reach the master,
        // whose security group opens port 30001 to it.
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&spec.subnet)
                .groups(&spec.security_group)
                .associate_public_ip_address(true)
                .delete_on_termination(true)
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(spec.root_volume_gb)
                        .volume_type(VolumeType::Gp3)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(tag_spec(ResourceType::Instance))
        .tag_specifications(tag_spec(ResourceType::Volume));
    if let Some(price) = &spec.spot_price {
        req = req.instance_market_options(
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .spot_options(
                    SpotMarketOptions::builder()
                        .max_price(price)
                        .spot_instance_type(SpotInstanceType::OneTime)
                        .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                        .build(),
                )
                .build(),
        );
    }
    let out = req.send().await.map_err(|e| Ec2Error::new("RunInstances", e))?;
    let ids: Vec<String> = out.instances().iter().filter_map(|i| i.instance_id()).map(str::to_string).collect();
    if ids.is_empty() {
        return Err(Ec2Error {
            operation: "RunInstances",
            kind: Ec2ErrorKind::Other,
            code: None,
            message: "no instance in the answer".into(),
        });
    }
    Ok(ids)
}

pub async fn start(client: &Client, ids: &[String]) -> Result<(), Ec2Error> {
    let ids = Some(ids.to_vec());
    client.start_instances().set_instance_ids(ids).send().await.map_err(|e| Ec2Error::new("StartInstances", e))?;
    Ok(())
}

pub async fn stop(client: &Client, ids: &[String]) -> Result<(), Ec2Error> {
    let ids = Some(ids.to_vec());
    client.stop_instances().set_instance_ids(ids).send().await.map_err(|e| Ec2Error::new("StopInstances", e))?;
    Ok(())
}

pub async fn terminate(client: &Client, ids: &[String]) -> Result<(), Ec2Error> {
    let ids = Some(ids.to_vec());
    let call = client.terminate_instances().set_instance_ids(ids);
    call.send().await.map_err(|e| Ec2Error::new("TerminateInstances", e))?;
    Ok(())
}

/// Makes the named EBS volumes go with the instance, so a terminated agent
/// leaves no volume behind to bill.
pub async fn set_delete_on_termination(client: &Client, id: &str, devices: &[String]) -> Result<(), Ec2Error> {
    let mappings = devices
        .iter()
        .map(|d| {
            InstanceBlockDeviceMappingSpecification::builder()
                .device_name(d)
                .ebs(EbsInstanceBlockDeviceSpecification::builder().delete_on_termination(true).build())
                .build()
        })
        .collect();
    client
        .modify_instance_attribute()
        .instance_id(id)
        .set_block_device_mappings(Some(mappings))
        .send()
        .await
        .map_err(|e| Ec2Error::new("ModifyInstanceAttribute", e))?;
    Ok(())
}

impl crate::world::Ec2 for Client {
    fn describe_agents<'a>(&'a self, slave_name: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, Ec2Error>> {
        Box::pin(describe_agents(self, slave_name))
    }

    fn run_instances<'a>(&'a self, spec: &'a LaunchSpec, count: i32) -> BoxFuture<'a, Result<Vec<String>, Ec2Error>> {
        Box::pin(run_instances(self, spec, count))
    }

    fn start<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(start(self, ids))
    }

    fn stop<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(stop(self, ids))
    }

    fn terminate<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(terminate(self, ids))
    }

    fn set_delete_on_termination<'a>(
        &'a self,
        id: &'a str,
        devices: &'a [String],
    ) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(set_delete_on_termination(self, id, devices))
    }

    fn tag<'a>(&'a self, id: &'a str, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), Ec2Error>> {
        Box::pin(tag(self, id, key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spot_bid_under_the_market_is_final_but_never_a_shortage() {
        assert!(is_final_for_the_call("SpotMaxPriceTooLow"));
        assert_eq!(Ec2ErrorKind::of(Some("SpotMaxPriceTooLow")), Ec2ErrorKind::Other);
    }

    #[test]
    fn a_list_call_refused_for_one_instance_is_worth_trying_one_by_one() {
        let error = |code: &str| Ec2Error {
            operation: "StopInstances",
            kind: Ec2ErrorKind::of(Some(code)),
            code: Some(code.into()),
            message: code.into(),
        };
        for code in [
            "InvalidInstanceID.NotFound",
            "InvalidInstanceID.Malformed",
            "IncorrectInstanceState",
            "OperationNotPermitted",
            "UnauthorizedOperation",
            "InsufficientInstanceCapacity",
        ] {
            assert!(error(code).may_be_about_one_instance(), "{code}");
        }
        for code in ["RequestLimitExceeded", "Throttling", "InternalError", "ServiceUnavailable", "Unavailable"] {
            assert!(!error(code).may_be_about_one_instance(), "{code}");
        }
        let no_answer = Ec2Error { code: None, ..error("x") };
        assert!(!no_answer.may_be_about_one_instance(), "a timeout or a reset connection is about the call");
    }

    #[test]
    fn every_capacity_shortage_is_final_for_the_call() {
        for code in ["InsufficientInstanceCapacity", "InsufficientCapacity", "MaxSpotInstanceCountExceeded"] {
            assert_eq!(Ec2ErrorKind::of(Some(code)), Ec2ErrorKind::CapacityShortage, "{code}");
            assert!(is_final_for_the_call(code), "{code}");
        }
        for code in ["RequestLimitExceeded", "InternalError", "UnauthorizedOperation"] {
            assert!(!is_final_for_the_call(code), "{code}");
        }
    }
}
