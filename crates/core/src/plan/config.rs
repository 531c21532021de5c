//! The planner's view of the configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::label::InstanceTypes;
use crate::model::{same_master, Instance, KEY_NAME};
use crate::warm::{Spare, WarmPool};

#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    /// EC2 `Name` tag marking our agents; nothing else is ever touched.
    pub slave_name: String,
    /// Per-env cap on non-spot agents in active states.
    pub max_on_demand: u32,
    /// Every env → the URL of its master (`jenkins_url` of environment.json):
    /// what an agent's ownership tag must name.
    pub masters: BTreeMap<String, String>,
    /// Instance types a label may ask for; others get no agent.
    pub instance_types: InstanceTypes,
    /// Per-env cap on spot agents in active states.
    pub max_spot: u32,
    /// Every known env → its current AMI (`None`: cannot create there).
    pub amis: BTreeMap<String, Option<String>>,
    /// How long a working marker (and a start marker) stays fresh.
    pub working_ttl: Duration,
    /// A running instance with no node yet counts as booting capacity this long.
    pub boot_grace: Duration,
    /// A running agent that has not become a node this long after its launch
    /// is terminated (`--zombie_minutes`); `None`: never.
    pub zombie_after: Option<Duration>,
    /// A spot launch EC2 has no capacity for may fall back to on-demand; the
    /// planner reserves that on-demand room so the cap still holds.
    pub spot_fallback: bool,
    /// The warm pools (`--warm`): stopped agents kept per label.
    pub warm: Vec<WarmPool>,
    /// The spare executors (`--spare`): idle executors kept ready per label.
    pub spare: Vec<Spare>,
}

impl PlanConfig {
    pub fn known_envs(&self) -> BTreeSet<String> {
        self.amis.keys().cloned().collect()
    }

    /// An agent of this manager in `env`: our `Name` tag, and this master
    /// named by its `jenkins_master` tag, or — for an agent from before the
    /// tag — by its `slave_data` (the inventory then adds the tag). A `Name`
    /// tag alone is anybody's to set: a second master using the same
    /// `--slave_name`, a "launch more like this", a stray `CreateTags`.
    pub fn is_ours(&self, env: &str, inst: &Instance) -> bool {
        let Some(master) = self.masters.get(env) else { return false };
        inst.name.as_deref() == Some(self.slave_name.as_str())
            // Fixed at launch, unlike tags: a stray CreateTags of our Name
            // and master tags on somebody's instance does not make it ours.
            && inst.key_name.as_deref() == Some(KEY_NAME)
            && match &inst.master_tag {
                Some(tag) => same_master(tag, master),
                None => inst.slave_data_master.as_deref().is_some_and(|url| same_master(url, master)),
            }
    }

    /// `inst` runs another AMI than its env's current one. The Groovy script
    /// drains such agents, so they serve nothing and are not started again.
    pub(super) fn on_replaced_ami(&self, env: &str, inst: &Instance) -> bool {
        matches!(self.amis.get(env), Some(Some(ami)) if *ami != inst.image_id)
    }
}
